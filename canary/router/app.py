"""The router: a pure-ASGI reverse proxy in front of each service's tracks, plus its admin API.

``/{service}/{path}`` is proxied to the track the split chooses.  Failover: when the canary answers
5xx, resets or times out, and the request is safe to repeat (GET/HEAD, or it carries an
``Idempotency-Key``: its body is then buffered), the request is re-sent to stable and the consumer
gets stable's answer; the canary's failure still counts against it.  Mirroring sends a share of
safe requests to the canary too and compares (``canary.router.mirror``).

Admin and observability: ``/healthz``, ``/readyz``, ``/metrics``, ``GET /_router/stats`` (the JSON
snapshot), ``GET /_router/mirror``, and ``GET``/``PUT /_router/table`` (bearer token).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from canary.router.compare import Answer
from canary.router.headers import response_headers, upstream_headers
from canary.router.mirror import Mirror
from canary.router.source import TableHolder
from canary.router.split import choose_track, route_template
from canary.router.stats import RouterStats
from canary.router.upstream import Attempt, UpstreamClient
from core.app import create_app, read_body, require_token
from core.errors import BadRequest
from core.routes import ServiceRoute, TableError, parse_table
from core.settings import Settings

SAFE = frozenset({"GET", "HEAD"})
# Operational endpoints name their release by design: comparing them would only report noise.
NEVER_MIRRORED = frozenset({"/healthz", "/readyz", "/metrics"})
ADMIN_PATHS = ("/healthz", "/readyz", "/metrics", "/_router")
MIRROR_BUFFER = 8 << 20


class _TooLarge(Exception):
    pass


class Router:
    def __init__(self, settings: Settings, table_source: str = "", table_token: str = "") -> None:
        self.settings = settings.with_overrides(service="router")
        self.tables = TableHolder(table_source, table_token)
        self.stats = RouterStats()
        self.client = UpstreamClient()
        self.mirror = Mirror(self.client, self.stats)
        self.max_body = self.settings.import_max_bytes
        self.admin = self._admin_app()

    # -- lifecycle and dispatch -------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.tables.load_file_now()
        await self.client.start()
        await self.tables.start()
        try:
            yield
        finally:
            await self.tables.stop()
            await self.mirror.drain()
            await self.client.close()

    def _admin_app(self) -> Starlette:
        app = create_app(
            self.settings,
            [
                Route("/_router/table", self._get_table, methods=["GET"]),
                Route("/_router/table", self._put_table, methods=["PUT"]),
                Route("/_router/stats", self._get_stats, methods=["GET"]),
                Route("/_router/mirror", self._get_mirror, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )
        app.state.metrics.registry.register(self.stats)
        return app

    @property
    def router(self) -> Any:
        """The admin app's Starlette router: its lifespan starts and stops the proxy's resources."""
        return self.admin.router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PATHS):
            await self.admin(scope, receive, send)
            return
        await self.proxy(scope, receive, send)

    # -- admin ------------------------------------------------------------------------------------
    async def _get_table(self, request: Request) -> Response:
        require_token(request, self.settings.admin_token)
        return JSONResponse({**self.tables.table.to_dict(), "status": self.tables.status()})

    async def _put_table(self, request: Request) -> Response:
        require_token(request, self.settings.admin_token)
        try:
            table = parse_table(json.loads(await read_body(request, 1 << 20)))
        except json.JSONDecodeError as exc:
            raise BadRequest(f"route table is not valid JSON: {exc.msg}") from None
        except TableError as exc:
            raise BadRequest(str(exc), code="bad_route_table") from None
        self.tables.set(table)
        return JSONResponse({"version": table.version, "services": sorted(table.services)})

    async def _get_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.snapshot())

    async def _get_mirror(self, request: Request) -> Response:
        return JSONResponse(self.mirror.report())

    # -- the proxy --------------------------------------------------------------------------------
    async def proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        service, _, rest = scope["path"][1:].partition("/")
        route = self.tables.table.services.get(service)
        if route is None:
            await _json(send, 404, "unknown_service", f"no route for service {service!r}", {"service": service})
            return
        path = "/" + rest
        path_qs = path + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
        raw_headers = scope["headers"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
        method = scope["method"]
        track = choose_track(route, headers, rest.split("/"))
        template = route_template(route, path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await _json(send, 413, "payload_too_large", f"request body over {self.max_body} bytes", None)
            return
        repeatable = method in SAFE or "idempotency-key" in headers
        mirror = (
            path not in NEVER_MIRRORED
            and track == "stable"
            and route.mirror.share > 0
            and (method in SAFE or template in route.mirror.safe_routes)
            and random.random() < route.mirror.share
        )
        client = scope.get("client") or ("", 0)
        up_headers = upstream_headers(raw_headers, client[0], scope.get("scheme", "http"))
        body: bytes | AsyncIterator[bytes] | None
        try:
            if method in SAFE and not headers.get("content-length") and "transfer-encoding" not in headers:
                body = None
            elif (track == "canary" and route.failover and repeatable) or mirror:
                body = await _read_all(receive, self.max_body)
            else:
                body = _stream(receive, self.max_body)
        except _TooLarge:
            await _json(send, 413, "payload_too_large", f"request body over {self.max_body} bytes", None)
            return
        started = time.perf_counter()
        try:
            attempt = await self.client.send(
                method, route.upstreams[track] + path_qs, up_headers, body, route.timeout_s
            )
        except _TooLarge:  # a streamed body grew past the limit on its way through
            await _json(send, 413, "payload_too_large", f"request body over {self.max_body} bytes", None)
            return
        failed_over = False
        if track == "canary" and attempt.failed and route.failover and repeatable:
            self._count(route, "canary", template, True, started)
            self.stats.failover((service, "canary", route.release("canary"), template))
            attempt.release()
            track, failed_over, started = "stable", True, time.perf_counter()
            attempt = await self.client.send(
                method, route.upstreams["stable"] + path_qs, up_headers, body, route.timeout_s
            )
        if not attempt.answered:
            self._count(route, track, template, True, started)
            status, code = (504, "upstream_timeout") if attempt.error == "timeout" else (502, "upstream_unavailable")
            await _json(
                send,
                status,
                code,
                f"{track} upstream of {service} failed: {attempt.error}",
                {"service": service, "track": track, "upstream": route.upstreams[track]},
            )
            return
        stable_copy = await self._respond(send, attempt, track, failed_over, mirror)
        self._count(route, track, template, attempt.status >= 500, started)
        if mirror and stable_copy is not None:
            mirror_body = body if isinstance(body, bytes) else None
            self.mirror.submit(route, template, method, path_qs, up_headers, mirror_body, stable_copy)

    def _count(self, route: ServiceRoute, track: str, template: str, error: bool, started: float) -> None:
        self.stats.record((route.name, track, route.release(track), template), error, time.perf_counter() - started)

    async def _respond(
        self, send: Send, attempt: Attempt, track: str, failed_over: bool, keep_copy: bool
    ) -> Answer | None:
        headers = response_headers(attempt.headers)
        headers.append((b"x-canary-track", track.encode()))
        if failed_over:
            headers.append((b"x-canary-failover", b"1"))
        await send({"type": "http.response.start", "status": attempt.status, "headers": headers})
        if attempt.body is not None:
            await send({"type": "http.response.body", "body": attempt.body})
            return Answer(attempt.status, attempt.content_type, attempt.body) if keep_copy else None
        assert attempt.stream is not None
        copy: list[bytes] | None = [] if keep_copy else None
        size = 0
        try:
            async for chunk in attempt.stream.content.iter_chunked(64 * 1024):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if copy is not None:
                    size += len(chunk)
                    copy = copy if size <= MIRROR_BUFFER else None
                    if copy is not None:
                        copy.append(chunk)
        finally:
            attempt.release()
        await send({"type": "http.response.body", "body": b""})
        return None if copy is None else Answer(attempt.status, attempt.content_type, b"".join(copy))


async def _read_all(receive: Receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message: Message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _stream(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return


async def _json(send: Send, status: int, code: str, message: str, detail: Any) -> None:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    payload = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_router(settings: Settings, table_source: str = "", table_token: str = "") -> Router:
    return Router(settings, table_source, table_token)
