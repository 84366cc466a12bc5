"""The platform seam: where releases run.  Local processes (``local``) or Kubernetes (``kubernetes``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

REASON_CHARS = 600  # a reason shown in one line: its first third and its last two thirds kept


def one_line(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` on one line (its whitespace runs made one space), at most ``limit`` characters: a
    longer one keeps its start and, longer, its end (where a traceback says what went wrong)."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    head = limit // 3
    return f"{line[:head]} ... {line[-(limit - head) :]}"


@dataclass(frozen=True)
class Instance:
    service: str  # a catalog service, or one of its queue consumers (by the consumer's own name)
    release: str
    track: str  # stable, canary, baseline
    url: str
    restarts: int = 0


class Platform(Protocol):
    # after a promotion, keep the old release running through the watch window (a rollback then
    # only moves traffic); the Kubernetes platform rolls stable back by a rolling update instead
    warm_old_release: bool

    async def start(self, service: str, release: str, track: str) -> Instance: ...

    async def healthy(self, service: str, release: str) -> bool: ...

    async def stop(self, service: str, release: str) -> None: ...

    async def running(self) -> list[Instance]: ...

    async def set_weight(self, service: str, weight: float) -> None:
        """Where traffic is split outside the project's router (Gateway API): apply the weight."""

    async def retire_canary(self, service: str) -> None:
        """A promotion's watch window is over: what ran the canary is no longer needed."""

    async def known_releases(self, service: str) -> list[str] | None:
        """The releases of ``service`` this platform can run, or None when it cannot tell (an image
        registry it does not list): ``canary release`` refuses an unknown one at once."""

    async def not_ready_reason(self, service: str, release: str) -> str:
        """Why a release is not ready, in the platform's words (for the rollout's reason)."""

    async def close(self) -> None:
        """The controller is stopping: stop what this platform runs only for it (local processes)."""
