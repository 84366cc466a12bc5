"""The proxy: one request from a consumer to the track the split chooses, and its answer back.

Where it sits: between a front end (``canary.router.server``'s protocol server, or the ASGI
adapter in ``canary.router.app``), which parses and frames, and the upstream pool
(``canary.router.upstream``).  It owns the routing decisions: the track (``canary.router.split``),
failover, mirroring, counting (``canary.router.stats``).

Failover: when the canary answers 5xx, resets, times out or answers malformed, and the request is
safe to repeat (:func:`safe_to_repeat`: GET/HEAD, or it carries an ``Idempotency-Key``; its body is
then buffered), the request is re-sent to stable and the consumer gets stable's answer; the canary's failure still
counts against it.  The bodies held for it share one budget across requests
(``canary.router.request_bodies``): a body over what is left streams to the canary without failover,
counted as ``unbuffered``.  Bodies that need no second send stream through as they arrive; a chunked
body is first read up to ``request_bodies.CHUNKED_PREFETCH`` bytes, so that a small one goes upstream whole with a
Content-Length (its framing checked before any byte is forwarded), and a large one's framing error
aborts the upstream request before it is complete.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping

from canary.router.compare import Answer
from canary.router.headers import request_headers, response_headers
from canary.router.mirror import Mirror
from canary.router.request_bodies import HeldBodies, Limited, prefetch
from canary.router.route_plan import PathPlan, RoutePlan, TablePlans
from canary.router.simple_heads import SimpleAnswer, SimpleRequest
from canary.router.source import TableHolder
from canary.router.stats import RouterStats
from canary.router.upstream import Attempt, UpstreamPool
from canary.router.upstream_connection import UpstreamConnection, UpstreamError
from canary.router.wire import (
    NO_BODY,
    BodyError,
    ClientGone,
    ClientSide,
    FastClientSide,
    RequestBody,
    RequestHead,
    bodyless,
    json_error,
    read_all,
)
from core.routes import ServiceRoute

SAFE = frozenset({"GET", "HEAD"})
ADMIN_TARGETS = (b"/healthz", b"/readyz", b"/metrics", b"/_router")  # the admin app's (server.ADMIN_PATHS)
# Operational endpoints name their release by design: comparing them would only report noise.
NEVER_MIRRORED = frozenset({"/healthz", "/readyz", "/metrics"})
FAILURE_WORDS = {
    "connect": "connection refused or unreachable",
    "tls": "TLS handshake or certificate verification failed (see router_ca_bundle)",
    "reset": "connection closed before a complete answer",
    "timeout": "no answer within the route's timeout_s",
    "bad_response": "malformed HTTP answer",
}


# The fast path's state of one exchange, kept by its upstream connection: (client, plan, track, path
# plan, sticky group, path, query, request, started).  A plain tuple: made on every request.
_FastContext = tuple[FastClientSide, RoutePlan, str, PathPlan, int, str, str, SimpleRequest, float]


class Proxy:
    def __init__(
        self,
        tables: TableHolder,
        stats: RouterStats,
        pool: UpstreamPool,
        mirror: Mirror,
        max_body: int,
        copy_cap: int,
        held: HeldBodies,
    ) -> None:
        """``held``: the budget of bodies held for failover (``request_bodies``)."""
        self.tables = tables
        self.stats = stats
        self.pool = pool
        self.mirror = mirror
        self.max_body = max_body
        self.copy_cap = copy_cap  # the most of a stable answer kept to compare with the canary's
        self.held = held
        self.plans = TablePlans(stats)
        self._answered = self._fast_answered  # bound once: the fast path hands it to every exchange

    def try_fast(self, target: bytes, request: SimpleRequest, client: FastClientSide) -> bool:
        """The common case without a task: a simple GET (``simple_heads``), not mirrored, on a pooled
        connection, answered from the upstream connection's callback when the answer is whole with
        its head.  Anything else is handed to :meth:`handle` (with the track already chosen) through
        ``client.continue_async``.  False: not a candidate, nothing decided (use :meth:`handle`)."""
        if target.startswith(ADMIN_TARGETS) and _admin_target(target):
            return False
        path, _, query = target.decode("latin-1").partition("?")
        service, _, rest = path[1:].partition("/")
        plans, table = self.plans, self.tables.table
        plan = plans.current.get(service) if table is plans.of else None
        if plan is None:
            plan = plans.plan(table, service)
            if plan is None:
                return False
        if not plan.lean:
            return False
        track, group = plan.splitter.choose(request.named, rest)
        upstream = plan.targets[track]
        conn = self.pool.take_idle(upstream.origin)
        if conn is None:
            head = RequestHead("GET", path, query, request.raw, request.client)
            client.continue_async(self.handle(head, NO_BODY, client, track, group=group))
            return True
        up_target = target[len(service) + 1 :]  # the path on the service, with its query
        if not up_target.startswith(b"/") or up_target.endswith(b"?"):  # "/svc", "/svc?q", "/svc/x?"
            up_target = ("/" + rest + "?" + query if query else "/" + rest).encode("latin-1")
        conn.start_fast(
            b"".join((upstream.line_start, up_target, upstream.line_end, request.upstream_block)),
            plan.timeout_s,
            self._answered,
            (
                client,
                plan,
                track,
                plan.paths.get(rest) or plan.path(rest),
                group,
                path,
                query,
                request,
                time.perf_counter(),
            ),
        )
        return True

    def _fast_answered(self, conn: UpstreamConnection, answer: SimpleAnswer | None, body: bytes) -> None:
        """The fast path's exchange is over: a simple whole answer (one write), else what the
        connection's parser made of it."""
        context: _FastContext = conn.context  # type: ignore[assignment]  # what try_fast gave it
        conn.context = None
        client, plan, track, path_plan, group, path, query, request, started = context
        if answer is not None:
            self.pool.give_back(conn)
            self.stats.record(path_plan.keys[track], False, time.perf_counter() - started)
            if group >= 0:
                self.stats.record_group(plan.name, plan.route.sticky, group, False, track == "canary")
            client.finish(answer.client_head(track, client.keep) + body)
            return
        head = RequestHead("GET", path, query, request.raw, request.client)
        self._fast_answer(head, client, plan.route, track, path_plan.template, conn, started, group)

    def _fast_answer(
        self,
        head: RequestHead,
        client: FastClientSide,
        route: ServiceRoute,
        track: str,
        template: str,
        conn: UpstreamConnection,
        started: float,
        group: int = -1,
    ) -> None:
        body = NO_BODY
        if client.closed:
            conn.close()
            client.done()
            return
        failover = track == "canary" and route.failover
        if not conn.status or (failover and conn.status >= 500):
            conn.close()
            if not conn.status and conn.error == "reset" and not conn.got_bytes:
                # an idle connection the upstream had just closed: send it again, on a fresh one (a GET:
                # safe_to_repeat, as UpstreamPool.send asks)
                client.continue_async(self.handle(head, body, client, track, group=group))
            elif failover:
                self._count(route, "canary", template, True, started, group)
                self.stats.failover((route.name, "canary", route.release("canary"), template))
                client.continue_async(self.handle(head, body, client, "stable", failed_over=True, group=group))
            else:
                self._count(route, track, template, True, started, group)
                client.answer_now(*self._failure(route, track, conn.error))
                client.done()
            return
        attempt = Attempt(conn.status, conn.headers, pool=self.pool, timeout_s=route.timeout_s)
        if not conn.complete:  # a streamed answer: on in the connection's task
            attempt.conn = conn
            client.continue_async(self._streamed(client, route, track, template, attempt, started, group))
            return
        attempt.body = b"".join(conn.chunks)
        conn.chunks.clear()
        self.pool.give_back(conn)
        client.answer_now(*self._whole(attempt, "GET", track, False))
        self._count(route, track, template, attempt.status >= 500, started, group)
        client.done()

    async def _streamed(
        self,
        client: ClientSide,
        route: ServiceRoute,
        track: str,
        template: str,
        attempt: Attempt,
        started: float,
        group: int = -1,
    ) -> None:
        await self._deliver(client, route, track, template, "GET", attempt, started, False, group=group)

    async def handle(
        self,
        head: RequestHead,
        body: RequestBody,
        client: ClientSide,
        track: str | None = None,
        failed_over: bool = False,
        group: int | None = None,
    ) -> None:
        """``track``, ``group``: already chosen (by the fast path, which hands a request on to here)."""
        service, _, rest = head.path[1:].partition("/")
        plan = self.plans.plan(self.tables.table, service)
        if plan is None:
            await client.answer(
                *json_error(404, "unknown_service", f"no route for service {service!r}", {"service": service})
            )
            return
        route = plan.route
        headers, up_headers = request_headers(head.headers, head.client, head.scheme)
        path = "/" + rest
        path_qs = path + ("?" + head.query if head.query else "")
        method = head.method
        if track is None or group is None:
            chosen, chosen_group = plan.splitter.choose(headers, rest)
            track = track or chosen
            group = chosen_group if group is None else group
        template = plan.path(rest).template
        if body.length is not None and body.length > self.max_body:
            await client.answer(*_too_large(self.max_body))
            return
        repeatable = safe_to_repeat(method, headers)
        mirror = (
            path not in NEVER_MIRRORED
            and track == "stable"
            and route.mirror.share > 0
            and (method in SAFE or template in route.mirror.safe_routes)
            and random.random() < route.mirror.share
        )
        failover = track == "canary" and route.failover and repeatable
        sent: bytes | RequestBody | None
        reserved = 0  # bytes of the failover budget this request's body holds
        try:
            if body.length == 0:
                sent = None if method in SAFE else b""
            elif mirror:
                sent = await read_all(body, self.max_body)
            elif failover:
                sent, reserved = await self.held.hold(body, self.max_body)
                if not isinstance(sent, bytes):  # over what the budget has left: streamed, no second send
                    failover = False
                    self.stats.unbuffered((service, track, route.release(track), template))
            elif body.length is None:
                sent = await prefetch(body, self.max_body)
            else:
                sent = Limited(body, self.max_body)
            started = time.perf_counter()
            attempt = await self.pool.send(
                method, route.upstreams[track], path_qs, up_headers, sent, route.timeout_s, repeatable=repeatable
            )
            if failover and attempt.failed:
                self._count(route, "canary", template, True, started, group)
                self.stats.failover((service, "canary", route.release("canary"), template))
                attempt.release()
                track, failed_over, started = "stable", True, time.perf_counter()
                attempt = await self.pool.send(
                    method, route.upstreams["stable"], path_qs, up_headers, sent, route.timeout_s, repeatable=True
                )
        except BodyError as exc:
            if exc.kind == "too_large":
                await client.answer(*_too_large(self.max_body))
            elif exc.kind == "bad_body":
                await client.answer(*json_error(400, "bad_request", "malformed request body (chunked encoding)"))
            return  # "client_gone": nobody to answer
        finally:
            if reserved:  # sent as often as it will be: the body and its share of the budget go
                self.held.give_back(reserved)
                sent = None
        copy = await self._deliver(client, route, track, template, method, attempt, started, failed_over, mirror, group)
        if mirror and copy is not None:
            body_sent = sent if isinstance(sent, bytes) else None
            self.mirror.submit(route, template, method, path_qs, up_headers, body_sent, copy)

    async def _deliver(
        self,
        client: ClientSide,
        route: ServiceRoute,
        track: str,
        template: str,
        method: str,
        attempt: Attempt,
        started: float,
        failed_over: bool,
        keep_copy: bool = False,
        group: int = -1,
    ) -> Answer | None:
        """The answer (or the failure) to the client, and its count; a copy of it when asked (mirror)."""
        if not attempt.answered:
            self._count(route, track, template, True, started, group)
            await client.answer(*self._failure(route, track, attempt.error))
            return None
        broke = False
        copy: Answer | None = None
        try:
            copy = await self._relay(client, attempt, method, track, failed_over, keep_copy)
        except UpstreamError:
            broke = True  # the answer broke off (reset, malformed chunking) after its head went out
            client.abort()
        except ClientGone:
            attempt.release()
        self._count(route, track, template, broke or attempt.status >= 500, started, group)
        return copy

    def _failure(self, route: ServiceRoute, track: str, error: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status, code = (504, "upstream_timeout") if error == "timeout" else (502, "upstream_unavailable")
        if error == "bad_response":
            code = "upstream_bad_response"
        words = FAILURE_WORDS.get(error, error)
        detail = {"service": route.name, "track": track, "upstream": route.upstreams[track], "error": error}
        return json_error(status, code, f"{track} upstream of {route.name} failed: {words}", detail)

    def _count(
        self, route: ServiceRoute, track: str, template: str, error: bool, started: float, group: int = -1
    ) -> None:
        self.stats.record((route.name, track, route.release(track), template), error, time.perf_counter() - started)
        if group >= 0:  # only where the table asks for bucket groups (the judge's sticky test)
            self.stats.record_group(route.name, route.sticky, group, error, track == "canary")

    @staticmethod
    def _answer_headers(attempt: Attempt, track: str, failed_over: bool) -> list[tuple[bytes, bytes]]:
        headers = response_headers(attempt.headers)
        headers.append((b"x-canary-track", track.encode()))
        if failed_over:
            headers.append((b"x-canary-failover", b"1"))
        return headers

    def _whole(
        self, attempt: Attempt, method: str, track: str, failed_over: bool
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = self._answer_headers(attempt, track, failed_over)
        assert attempt.body is not None
        if bodyless(method, attempt.status):
            return attempt.status, headers, b""
        body = attempt.body
        headers = [h for h in headers if h[0] != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        return attempt.status, headers, body

    async def _relay(
        self, client: ClientSide, attempt: Attempt, method: str, track: str, failed_over: bool, keep_copy: bool
    ) -> Answer | None:
        if attempt.body is not None:  # complete with its head: one write
            status, headers, body = self._whole(attempt, method, track, failed_over)
            await client.answer(status, headers, body)
            keep_copy = keep_copy and len(body) <= self.copy_cap
            return Answer(attempt.status, attempt.content_type, body) if keep_copy else None
        headers = self._answer_headers(attempt, track, failed_over)
        no_body = bodyless(method, attempt.status)
        await client.start(attempt.status, headers, chunked=attempt.content_length is None and not no_body)
        copy: list[bytes] | None = [] if keep_copy else None
        size = 0
        try:
            while chunk := await attempt.read():
                await client.write(chunk)
                if copy is not None:
                    size += len(chunk)
                    copy = copy if size <= self.copy_cap else None
                    if copy is not None:
                        copy.append(chunk)
        finally:
            attempt.release()
        await client.end()
        return None if copy is None else Answer(attempt.status, attempt.content_type, b"".join(copy))


def safe_to_repeat(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a request may reach an upstream twice: a safe method, or one that carries an
    ``Idempotency-Key`` (the service answers a repeat as a replay).  The one rule for failover and
    for sending again on a fresh connection when a reused one closed without an answer."""
    return method in SAFE or "idempotency-key" in headers


def _admin_target(target: bytes) -> bool:
    """A request target (path and query) for the admin app: one of ``ADMIN_TARGETS`` followed by
    nothing, "/" or "?" (``/metrics-api/x`` is a service's)."""
    return b"/" + target[1:].partition(b"?")[0].partition(b"/")[0] in ADMIN_TARGETS


def _too_large(limit: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return json_error(413, "payload_too_large", f"request body over {limit} bytes", None)
