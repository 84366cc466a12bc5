"""Mirroring: send a copy of a safe request to the canary, compare, and learn what is noise.

The consumer always gets stable's answer; the comparison happens afterwards, off the request path.
When a baseline copy of stable is configured (or, with ``stable_baseline``, stable itself asked a
second time), the same request goes to it too: whatever differs between two answers of stable's
release (a timestamp, a generated id) is noise, learnt per route, and never reported against the
canary (Diffy's idea).  Differences are counted per route, the canary's and the baseline's: the
judge tests the canary's difference rate against the baseline's.  The baseline's answer is compared
against the noise learnt *before* the request, the canary's also past the fields the baseline's
answer differs in now (``compare.compare_mirrored``), and those are learnt after it: a healthy
canary then differs no more often than the baseline, so the judge's test stays valid.  A baseline
that does not answer (a timeout, a refused connection: stable asked twice under load) is not
counted: that is load, not noise.  Two routers, or comparisons in flight together, may each count a
new noisy field once before it is learnt.

Bounded: at most ``MAX_IN_FLIGHT`` comparisons at once per router (a request chosen beyond it is
not mirrored, and counted as skipped), each answer read whole within ``DEADLINE_FACTOR`` times the
route's timeout and up to the copy cap.  The latest differences are kept as samples a person can
read.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from typing import Any

from canary.router.compare import Answer, compare_mirrored
from canary.router.stats import RouterStats
from canary.router.upstream import Attempt, UpstreamPool
from canary.router.upstream_connection import UpstreamError
from core.routes import ServiceRoute

MAX_IN_FLIGHT = 64  # comparisons at once per router (each holds up to three answers of the copy cap)
DEADLINE_FACTOR = 2.0  # a mirrored answer arrives whole within this many times the route's timeout
FAILED = 599  # the status of a mirrored answer that did not arrive


def baseline_of(route: ServiceRoute) -> str:
    """The track whose answer is the baseline: a baseline copy, else stable asked again if the
    route says so, else none ("")."""
    if "baseline" in route.upstreams:
        return "baseline"
    return "stable" if route.mirror.stable_baseline else ""


class Mirror:
    def __init__(self, client: UpstreamPool, stats: RouterStats, cap: int) -> None:
        self.client = client
        self.cap = cap  # answers above this are not compared (nor held in memory)
        self.stats = stats
        self.noisy: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.samples: dict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=50))
        self.tasks: set[asyncio.Task[None]] = set()

    def submit(
        self,
        route: ServiceRoute,
        template: str,
        method: str,
        path_qs: str,
        headers: bytes,
        body: bytes | None,
        stable: Answer,
    ) -> None:
        if len(stable.body) > self.cap:
            return  # not compared (the proxy keeps no copy of such an answer)
        if len(self.tasks) >= MAX_IN_FLIGHT:
            self.stats.mirror_skipped[(route.name, template)] += 1
            return
        task = asyncio.create_task(self._compare(route, template, method, path_qs, headers, body, stable))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _fetch(
        self, route: ServiceRoute, track: str, method: str, path_qs: str, headers: bytes, body: bytes | None
    ) -> Answer | None:
        """The track's answer (a failure as status ``FAILED``); None when it is over the cap: not compared."""
        attempt: Attempt | None = None
        try:
            async with asyncio.timeout(route.timeout_s * DEADLINE_FACTOR):
                # what is mirrored is safe to send again by the table's word (GET/HEAD, or a
                # route of ``mirror.safe_routes``): it already is a second sending
                attempt = await self.client.send(
                    method, route.upstreams[track], path_qs, headers, body, route.timeout_s, repeatable=True
                )
                if not attempt.answered:
                    return Answer(FAILED, "", attempt.error.encode())
                data = await attempt.read_all(self.cap)
        except UpstreamError as exc:
            return None if exc.kind == "too_large" else Answer(FAILED, "", exc.kind.encode())
        except TimeoutError:
            if attempt is not None:
                attempt.release()  # mid-answer: the connection is closed, never pooled
            return Answer(FAILED, "", b"deadline")
        return Answer(attempt.status, attempt.content_type, data)

    async def _compare(
        self,
        route: ServiceRoute,
        template: str,
        method: str,
        path_qs: str,
        headers: bytes,
        body: bytes | None,
        stable: Answer,
    ) -> None:
        fetches = [self._fetch(route, "canary", method, path_qs, headers, body)]
        baseline_track = baseline_of(route)
        if baseline_track:
            fetches.append(self._fetch(route, baseline_track, method, path_qs, headers, body))
        answers = await asyncio.gather(*fetches)
        canary = answers[0]
        if canary is None:
            return  # over the cap, as stable's would be: not compared, not counted either way
        key = (route.name, template)
        baseline = answers[1] if len(answers) > 1 else None  # (over the cap: not compared, teaches nothing)
        if baseline is not None and baseline.status == FAILED:
            baseline = None  # not answered: load, not noise; neither counted nor learnt from
        compared = await asyncio.to_thread(
            compare_mirrored,
            stable,
            canary,
            baseline,
            frozenset(route.mirror.ignore_fields),
            frozenset(self.noisy[key]),  # the noise learnt before this request
            route.mirror.pixel_tolerance,
        )
        if compared.baseline is not None:
            self.stats.mirrored(route.name, template, bool(compared.baseline), track="baseline")
            self.noisy[key].update(compared.learnt)
        found = compared.canary
        self.stats.mirrored(route.name, template, bool(found))
        if found and route.mirror.samples:
            samples = self.samples[route.name]
            if samples.maxlen != route.mirror.samples:
                samples = self.samples[route.name] = deque(samples, maxlen=route.mirror.samples)
            samples.append(
                {
                    "at": time.time(),
                    "route": template,
                    "request": f"{method} {path_qs}",
                    "stable": stable.describe(),
                    "canary": canary.describe(),
                    "differences": found,
                }
            )

    def report(self) -> dict[str, Any]:
        return {
            "noise": {f"{s} {r}": sorted(paths) for (s, r), paths in self.noisy.items() if paths},
            "samples": {s: list(d) for s, d in self.samples.items()},
        }

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks)
