"""What a local release's ready path answered when last asked, so that a controller tick asks it
once: the tick asks whether the canary is ready (``healthy``) and, when it is not, why
(``not_ready``), whose words are then what that same ask heard.

The controller asks every canary every tick, so the ask goes on the platform's kept-alive client
(``core.http_client``: a new client costs more CPU than the request), and its words are
``processes.probe``'s for the same outcomes (503 and its body, nothing listening on its port).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from canary.platforms.processes import ServiceProcess, answer_words, failure_words

ASK_TIMEOUT_S = 2.0
FRESH_S = 2.0  # an answer this recent is the tick's (a tick is 0.5-1 s); an older one is asked again


@dataclass(frozen=True)
class ReadyAnswer:
    """What ``proc``'s ready path answered when last asked."""

    proc: ServiceProcess  # the process asked (a restarted release's new process has not been)
    ready: bool  # it answered 200
    words: str = ""  # what it answered instead of a 200, in ``probe``'s words
    at: float = field(default_factory=time.monotonic)

    def about(self, proc: ServiceProcess) -> bool:
        """It is what ``proc`` answered, lately (not a tick ago that asked nothing)."""
        return self.proc is proc and time.monotonic() - self.at <= FRESH_S


async def ask_ready(proc: ServiceProcess, client: httpx.AsyncClient) -> ReadyAnswer:
    """Ask ``proc``'s ready path once, on ``client`` (kept alive)."""
    url = f"{proc.url}{proc.ready_path}"
    try:
        answer = await client.get(url, timeout=ASK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return ReadyAnswer(proc, ready=False, words=failure_words(url, exc, ASK_TIMEOUT_S))
    return ReadyAnswer(proc, ready=answer.status_code == 200, words=answer_words(url, answer))


async def worded(proc: ServiceProcess, last: ReadyAnswer | None, client: httpx.AsyncClient) -> ReadyAnswer:
    """``last`` if it is ``proc``'s latest answer, else a new ask of it."""
    if last is not None and last.about(proc):
        return last
    return await ask_ready(proc, client)
