"""What a local release's ready path answered when last asked, so that a controller tick asks it
once: the tick asks whether the canary is ready (``healthy``) and, when it is not, why
(``not_ready``), whose words are then what that same ask heard.

The controller asks every canary every tick, so a release that answers 200 is asked on the
platform's kept-alive client (``core.http_client``: a new client costs more CPU than the request);
that ask answers yes or no, without words.  A release that did not answer 200 when last asked is
asked by ``processes.probe`` instead, whose words say what it answered (503 and its body, nothing
listening on its port).  So the tick in which a release stops answering asks it twice if it wants
the words (the kept-alive ask, then ``probe``); each tick after that, once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from canary.platforms.processes import ServiceProcess, probe

ASK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ReadyAnswer:
    """What ``proc``'s ready path answered when last asked."""

    proc: ServiceProcess  # the process asked (a restarted release's new process has not been)
    ready: bool  # it answered 200
    words: str = ""  # ``probe``'s words for any other answer; "" from the kept-alive ask, which has none

    def about(self, proc: ServiceProcess) -> bool:
        return self.proc is proc


async def ask_ready(proc: ServiceProcess, last: ReadyAnswer | None, client: httpx.AsyncClient) -> ReadyAnswer:
    """Ask ``proc``'s ready path once: on ``client`` (kept alive) unless ``last`` says it did not
    answer 200, then by ``probe``, for the words."""
    if last is not None and last.about(proc) and not last.ready:
        return await probed(proc)
    try:
        answer = await client.get(f"{proc.url}{proc.ready_path}", timeout=ASK_TIMEOUT_S)
    except httpx.HTTPError:
        return ReadyAnswer(proc, ready=False)
    return ReadyAnswer(proc, ready=answer.status_code == 200)


async def worded(proc: ServiceProcess, last: ReadyAnswer | None) -> ReadyAnswer:
    """``last`` if it is about ``proc`` and says what the ready path answered in words (or that it
    answered 200), else a new ``probe`` of it."""
    if last is not None and last.about(proc) and (last.ready or last.words):
        return last
    return await probed(proc)


async def probed(proc: ServiceProcess) -> ReadyAnswer:
    said = await asyncio.to_thread(probe, f"{proc.url}{proc.ready_path}", ASK_TIMEOUT_S)
    return ReadyAnswer(proc, ready=not said, words=said)
