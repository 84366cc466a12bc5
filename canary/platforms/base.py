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


@dataclass(frozen=True)
class NotReady:
    """Why a release is not ready yet, in the platform's words, as it last heard them: what its ready
    path answered, that nothing listens on its port, that its process exited and its log's last line,
    a Deployment's conditions.  ``reason`` is one line (``one_line``: bounded, its end kept) whatever
    the platform said.  A platform that waits for the release itself (a local start polls the ready
    path up to the entry's ``ready_timeout_s``) says for how long it has waited and when it gives up
    (``deadline_s``: the start fails then); one that does not count (a Deployment waits forever) says
    None, and the controller's own ready deadline is the one that ends the wait."""

    reason: str
    waited_s: float | None = None
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", one_line(self.reason))


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

    async def not_ready(self, service: str, release: str) -> NotReady:
        """Why a release is not ready (also while its start goes on), in the platform's words: for
        the pending rollout's summary and, at its deadline, its reason."""

    async def close(self) -> None:
        """The controller is stopping: stop what this platform runs only for it (local processes)."""
