"""Starting releases without holding the controller's tick.

A local release may take up to its catalog entry's ``ready_timeout_s`` to answer its ready path.
The controller asks :class:`Starts` to start a release (a service's, with its queue consumers');
each call waits at most ``wait_s`` for the starts it names, and a slower start goes on in the
background, so one slow release holds only its own rollout.  A finished start's URL goes into the
controller's upstreams; a start the controller no longer wants (its rollout ended) is cancelled,
and at shutdown every start still going on is cancelled and waited for (the platform stops what
it was starting).  The platform's error, if a start fails, is raised by the call that sees it.
"""

from __future__ import annotations

import asyncio

from canary.platforms.base import Instance, Platform

START_WAIT_S = 1.0  # how long one tick waits for a release to start; a slower start goes on behind


class Starts:
    def __init__(self, platform: Platform, urls: dict[tuple[str, str], str], wait_s: float = START_WAIT_S) -> None:
        """``urls``: (name, release) -> where it answers, filled in as starts finish."""
        self.platform = platform
        self.urls = urls
        self.wait_s = wait_s
        self.going: dict[tuple[str, str, str], asyncio.Task[Instance]] = {}  # (name, release, track)

    async def run(self, names: tuple[str, ...], release: str, track: str, until_started: bool = False) -> bool:
        """Start ``release`` of each of ``names`` on ``track``, waiting at most ``wait_s`` for all of
        them together (or until started); False while a start goes on in the background."""
        tasks = {}
        for name in names:
            key = (name, release, track)
            if key not in self.going:
                self.going[key] = asyncio.ensure_future(self.platform.start(name, release, track))
            tasks[key] = self.going[key]
        await asyncio.wait(tasks.values(), timeout=None if until_started else self.wait_s)
        for key, task in tasks.items():
            if task.done():
                del self.going[key]
                self.urls[(key[0], release)] = task.result().url
        return all(task.done() for task in tasks.values())

    def going_on(self, names: tuple[str, ...], release: str) -> tuple[str, ...]:
        """Those of ``names`` whose start of ``release`` goes on in the background (in their order)."""
        return tuple(name for name in names if any(k[:2] == (name, release) for k in self.going))

    def cancel(self, name: str, release: str) -> None:
        for key in [k for k in self.going if k[:2] == (name, release)]:
            self.going.pop(key).cancel()  # the platform stops what it was starting

    async def stop_all(self) -> None:
        """At shutdown: cancel the starts that go on and wait until each platform call has stopped
        what it was starting."""
        tasks = list(self.going.values())
        self.going.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
