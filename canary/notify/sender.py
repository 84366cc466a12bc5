"""The sender: an asyncio task that delivers the outbox to each webhook, retrying with backoff.

Sits beside the controller's loop (never inside a tick): each pass stores events the database
refused earlier, then for every webhook claims the head of its queue and posts the deliveries in
order; a 2xx marks one delivered, anything else (a status, a refused connection, a timeout) puts
it back with its attempt counted and the next try after an exponential backoff with jitter,
capped (a ``Retry-After`` is honoured up to the cap).  Any exception from one attempt (even one
httpx does not count as an HTTP error, such as ``InvalidURL``) is that attempt failing, so a webhook
that fails holds only its own queue and the task never dies of it.  About once an hour (``prune_every_s``)
the running sender forgets events every webhook had more than ``keep_s`` ago (an event some webhook
has not got is never forgotten).  Database work runs in threads, so a slow database never stalls
the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy.exc import SQLAlchemyError

from canary.notify import payloads
from canary.notify.outbox import Outbox, Pending
from canary.notify.webhooks import Webhook

log = logging.getLogger("canary.notify")


@dataclass(frozen=True)
class RetryPolicy:
    first_s: float = 1.0
    factor: float = 2.0
    max_s: float = 300.0
    jitter: float = 0.2  # each delay is drawn within +-20% so that retries of many events spread out

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds before the next try, after ``attempts`` failed tries (1 or more)."""
        base = min(self.max_s, self.first_s * self.factor ** max(0, attempts - 1))
        return min(self.max_s, base * (1 + self.jitter * (2 * rng.random() - 1)))


@dataclass(frozen=True)
class Attempt:
    ok: bool
    error: str = ""
    retry_after_s: float = 0.0


class Sender:
    def __init__(
        self,
        outbox: Outbox,
        webhooks: Sequence[Webhook] | None = None,
        *,
        policy: RetryPolicy = RetryPolicy(),
        poll_s: float = 0.5,
        batch: int = 50,
        lease_s: float = 60.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        prune_every_s: float = 3600.0,
        keep_s: float = 7 * 86_400.0,
    ) -> None:
        self.outbox = outbox
        self.webhooks = tuple(outbox.webhooks if webhooks is None else webhooks)
        self.policy, self.poll_s, self.batch, self.lease_s = policy, poll_s, batch, lease_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.prune_every_s, self.keep_s = prune_every_s, keep_s
        self.pruned = 0  # events this sender's prunes forgot
        self._next_prune = 0.0  # time.monotonic() of the next prune: the first pass of run() prunes
        self.sent = 0  # deliveries marked delivered by this sender
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        """Start the next pass now (after an enqueue); safe from any thread."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Deliver until cancelled."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            self._client = client
            try:
                while True:
                    await self._prune_if_due()
                    await self.pass_once()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_s)
                    self._wake.clear()
            finally:
                self._client = None

    async def pass_once(self) -> int:
        """One pass over every webhook; how many deliveries it completed.  Never raises."""
        if self._client is None:  # called on its own (tests, a one-off flush): a client for this pass
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
                self._client = client
                try:
                    return await self._pass()
                finally:
                    self._client = None
        return await self._pass()

    async def _prune_if_due(self) -> None:
        """At most once per ``prune_every_s``: forget what every webhook had ``keep_s`` ago."""
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self.prune_every_s
        try:
            self.pruned += await asyncio.to_thread(self.outbox.prune, self.keep_s)
        except (SQLAlchemyError, OSError) as exc:  # tried again at the next period
            log.warning("notifications: old events not pruned: the database did not answer: %s", exc)

    async def _pass(self) -> int:
        try:
            await asyncio.to_thread(self.outbox.flush_deferred)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("notifications wait: the database did not answer: %s", exc)
            return 0
        # each webhook on its own: one whose database work fails does not cost the others their count
        done = await asyncio.gather(*(self._drain(hook) for hook in self.webhooks), return_exceptions=True)
        total = 0
        for hook, result in zip(self.webhooks, done, strict=True):
            if isinstance(result, int):
                total += result
            elif isinstance(result, SQLAlchemyError | OSError):
                log.warning("notifications for %r wait: the database did not answer: %s", hook, result)
            elif isinstance(result, Exception):
                log.error("notifications for %r wait: %s", hook, result, exc_info=result)
            else:  # a cancellation (or KeyboardInterrupt...) is not ours to swallow
                raise result
        return total

    async def _drain(self, hook: Webhook) -> int:
        pending = await asyncio.to_thread(self.outbox.claim, hook.key, self.batch, self.lease_s)
        done = 0
        for item in pending:
            attempt = await self._post(hook, item)
            if attempt.ok:
                await asyncio.to_thread(self.outbox.delivered, item)
                done += 1
                self.sent += 1
                continue
            wait = max(self.policy.delay(item.attempts + 1, self.rng), attempt.retry_after_s)
            await asyncio.to_thread(
                self.outbox.failed, item, attempt.error, self.clock() + min(wait, self.policy.max_s)
            )
            log.info(
                "webhook %r: event %s not delivered (%s); next try in %.1f s", hook, item.event.id, attempt.error, wait
            )
            await asyncio.to_thread(self.outbox.release, item.claim)  # later events wait their turn
            break
        return done

    async def _post(self, hook: Webhook, item: Pending) -> Attempt:
        """One attempt; whatever goes wrong in it (even an exception nobody expected) is a failed
        attempt, recorded with its words and retried after the backoff like any other."""
        assert self._client is not None  # pass_once and run() provide one
        try:
            data = payloads.body(item.event, hook.kind)
            headers = payloads.headers(item.event, hook, data, self.clock())
            return await _attempt(self._client, hook.url, data, headers)
        except Exception as exc:  # anything but a cancellation (a BaseException)
            if not isinstance(exc, httpx.HTTPError):
                log.warning("webhook %r: unexpected error sending event %s", hook, item.event.id, exc_info=exc)
            return Attempt(False, f"{type(exc).__name__}: {exc}"[:300])


async def _attempt(client: httpx.AsyncClient, url: str, data: bytes, headers: dict[str, str]) -> Attempt:
    r = await client.post(url, content=data, headers=headers)
    if 200 <= r.status_code < 300:
        return Attempt(True)
    retry_after = r.headers.get("retry-after", "")
    return Attempt(False, f"answered {r.status_code}", float(retry_after) if retry_after.isdigit() else 0.0)
