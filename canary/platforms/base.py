"""The platform seam: where releases run.  Local processes here; Kubernetes in its own issue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Instance:
    service: str  # importer, opens, opens-processor, resizer
    release: str
    track: str  # stable, canary, baseline
    url: str
    restarts: int = 0


class Platform(Protocol):
    async def start(self, service: str, release: str, track: str) -> Instance: ...

    async def healthy(self, service: str, release: str) -> bool: ...

    async def stop(self, service: str, release: str) -> None: ...

    async def running(self) -> list[Instance]: ...
