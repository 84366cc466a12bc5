"""The app factory every service (and the framework's own HTTP apps) is built with.

``create_app`` adds what each process must have: ``/healthz`` (the process answers), ``/readyz``
(its database answers), ``/metrics``, JSON error bodies for every error (never an HTML traceback),
a request body size limit and an ``X-Request-Id`` on every answer.  Resources (engines, clients)
are made in the lifespan and kept on ``app.state``, so nothing exists before the app starts and
tests can build as many apps as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import Engine, MetaData
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.db import create_schema, engine_for, ping
from core.errors import BadRequest, HeadersTooLarge, HTTPError, PayloadTooLarge, ServiceUnavailable, Unauthorized
from core.metrics import AppMetrics, RequestMetricsMiddleware
from core.settings import Settings

log = logging.getLogger("releasewarden")

Lifespan = Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings,
    routes: Sequence[BaseRoute],
    *,
    lifespan: Lifespan | None = None,
    max_body_bytes: int | None = None,
    metrics: AppMetrics | None = None,
    metadata: MetaData | None = None,
    durable_commits: bool = False,
) -> Starlette:
    """With ``metadata``, the lifespan makes the database engine (``app.state.engine``) and the
    schema before the app's own ``lifespan`` runs, and disposes of the engine after it
    (``durable_commits``: see ``core.db.make_engine``)."""
    metrics = metrics or AppMetrics(settings.service, settings.release)

    @contextlib.asynccontextmanager
    async def _lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = None
        if metadata is not None:
            engine = engine_for(settings, durable_commits=durable_commits)
            await run_in_threadpool(create_schema, engine, metadata)
            app.state.engine = engine
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            if engine is not None:
                engine.dispose()

    app = Starlette(
        routes=[
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/readyz", _readyz, methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
            *routes,
        ],
        exception_handlers={
            HTTPError: _http_error,
            HTTPException: _starlette_error,
            OperationalError: _database_unavailable,
            InterfaceError: _database_unavailable,
            PoolTimeout: _database_unavailable,
            Exception: _unexpected,
        },
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = None
    metrics.gauge(
        "db_pool_connections_checked_out", "Database connections checked out of the pool right now."
    ).set_function(lambda: _checked_out(app))
    app.state.db_errors = metrics.counter(
        "db_errors_total", "Requests answered 503 because the database was unavailable, by error.", ["error"]
    )
    app.add_middleware(BodySizeLimitMiddleware, limit=max_body_bytes or settings.max_body_bytes)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app


def _checked_out(app: Starlette) -> float:
    engine: Engine | None = app.state.engine
    checkedout = getattr(engine.pool, "checkedout", None) if engine is not None else None
    return float(checkedout()) if callable(checkedout) else 0.0


async def _healthz(request: Request) -> Response:
    s: Settings = request.app.state.settings
    return JSONResponse({"status": "ok", "service": s.service, "release": s.release})


async def _readyz(request: Request) -> Response:
    engine: Engine | None = request.app.state.engine
    if engine is not None:
        try:
            await run_in_threadpool(ping, engine)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ready"})


async def _metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code, headers=exc.headers
    )


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    m = request.app.state.metrics
    request.app.state.db_errors.labels(m.service, m.release, type(exc).__name__).inc()
    error = ServiceUnavailable(f"database unavailable ({type(exc).__name__}); retry later", code="database_unavailable")
    return JSONResponse(error.body(), status_code=503, headers={"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": {"code": "internal_error", "message": f"internal error ({type(exc).__name__})"}},
        status_code=500,
    )


def require_token(request: Request, *accepted: str) -> None:
    """Bearer-token check for admin and controller endpoints: the token must be one of ``accepted``
    (constant-time compares; an empty one accepts nobody)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not any(
        expected and hmac.compare_digest(token.encode(), expected.encode()) for expected in accepted
    ):
        raise Unauthorized("a valid bearer token is required", code="token_required")


MAX_HEADER_BYTES = 64 << 10  # a request's header names and values together (431 beyond)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large a number")
    return value


def _utf8_strings(value: Any) -> None:
    """A ``\\ud800`` escape decodes to a lone surrogate, which no database nor answer can encode."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone surrogate escape") from None
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def parse_json(raw: bytes | str, expected: str) -> Any:
    """A request body as JSON, or a 400 that says what was ``expected``: also for what the json
    module refuses past its syntax (nesting deeper than the interpreter's recursion limit, an integer
    of more than 4,300 digits, text that is not UTF-8) and for ``NaN`` and ``Infinity``, which are not
    JSON and no handler could use, for numbers past a float's range (``1e400``) and for strings
    holding a lone surrogate escape."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        _utf8_strings(value)
        return value
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(":")[0]
        raise BadRequest(f"body must be {expected} ({reason})") from None


async def read_body(request: Request, limit: int) -> bytes:
    """Read a request body, refusing (413) as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes", detail={"limit": limit})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes", detail={"limit": limit})
        chunks.append(chunk)
    return b"".join(chunks)


class BodySizeLimitMiddleware:
    """Refuses bodies over ``limit`` bytes, by Content-Length up front or while they stream in, and
    requests whose headers hold over ``MAX_HEADER_BYTES`` (431).

    When the app answers (or fails) before reading the whole body, the rest is read and dropped
    first, up to ``limit`` more bytes and ``DRAIN_TIMEOUT_S``: a client still uploading then gets the
    answer (a 413, a 422 or a 500) instead of a reset connection.
    """

    DRAIN_TIMEOUT_S = 5.0

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
            refused = HeadersTooLarge(
                f"request headers over {MAX_HEADER_BYTES} bytes", detail={"limit": MAX_HEADER_BYTES}
            )
            await _send_json(send, 431, refused.body())
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_json(send, 413, PayloadTooLarge(f"request body over {limit} bytes").body())
                return
        received = 0
        finished = False

        async def limited_receive() -> Message:
            nonlocal received, finished
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > limit:
                    raise PayloadTooLarge(f"request body over {limit} bytes", detail={"limit": limit})
            else:
                finished = True
            return message

        async def drain() -> None:
            nonlocal finished
            budget = limit  # read and drop at most this much more, past the limit too
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.DRAIN_TIMEOUT_S):
                    while not finished and budget > 0:
                        message = await receive()
                        budget -= len(message.get("body", b""))
                        finished = message["type"] != "http.request" or not message.get("more_body", False)

        async def draining_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not finished:
                await drain()
            await send(message)

        try:
            await self.app(scope, limited_receive, draining_send)
        except Exception:
            if not finished:
                await drain()
            raise


class UnexpectedErrorMiddleware:
    """Answers a bug (any exception no handler took) with a JSON 500 and keeps the connection.

    Starlette's own last-resort handler re-raises so the server can log, and uvicorn then closes
    the connection; a consumer reusing it would see its next request fail too.  Here the error is
    logged once and the connection stays usable.  An error after the answer started still raises.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:
                raise
            response = await _unexpected(Request(scope), exc)
            await response(scope, receive, send)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 128:
                request_id = value
                break
        if not request_id:
            request_id = uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode("latin-1")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, send_wrapper)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
