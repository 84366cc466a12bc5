"""The router: a reverse proxy in front of each service's tracks, plus its admin API.

``/{service}/{path}`` is proxied to the track the split chooses (``canary.router.proxy``: split,
stickiness, override, failover, mirroring, counting).  The fast path is the protocol-level server
(``canary.router.server``; ``python -m canary.router`` and :func:`serve_router_in_thread` run it);
the router is also an ASGI app, for embedding in any ASGI server, proxying through the same code.

Admin and observability: ``/healthz``, ``/readyz``, ``/metrics``, ``GET /_router/stats`` (the JSON
snapshot), ``GET /_router/mirror`` (bearer token: its samples are consumers' requests and answers),
and ``GET``/``PUT /_router/table`` (bearer token): a Starlette app, to which the protocol server
hands those paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from canary.router.asgi_bridge import AsgiBody, AsgiClient, call_asgi, head_of
from canary.router.listener import RouterServer, loop_in_thread, new_loop
from canary.router.mirror import Mirror
from canary.router.proxy import Proxy
from canary.router.request_bodies import HeldBodies
from canary.router.server import ADMIN_BODY_MAX, ADMIN_PATHS
from canary.router.source import TableHolder
from canary.router.stats import RouterStats
from canary.router.upstream import UpstreamPool
from canary.router.wire import BodyError, ClientSide, RequestBody, RequestHead, json_error, read_all
from core.app import create_app, parse_json, read_body, require_token
from core.errors import BadRequest, ConfigError
from core.routes import TableError, parse_table
from core.settings import Settings


class Router:
    def __init__(self, settings: Settings, table_source: str = "", table_token: str = "") -> None:
        self.settings = settings.with_overrides(service="router")
        if settings.router_ca_bundle and not Path(settings.router_ca_bundle).is_file():
            raise ConfigError(f"router_ca_bundle: no such file {settings.router_ca_bundle!r}")
        self.tables = TableHolder(table_source, table_token)
        self.stats = RouterStats()
        self.client = UpstreamPool(settings.router_upstream_idle_s, settings.router_ca_bundle)
        self.mirror = Mirror(self.client, self.stats, settings.router_buffer_max_bytes)
        self.proxy = Proxy(
            self.tables,
            self.stats,
            self.client,
            self.mirror,
            self.settings.import_max_bytes,
            settings.router_buffer_max_bytes,
            HeldBodies(settings.router_failover_buffer_bytes),
        )
        self.admin = self._admin_app()
        self._running = 0

    @property
    def max_body(self) -> int:
        return self.proxy.max_body

    @max_body.setter
    def max_body(self, value: int) -> None:
        self.proxy.max_body = value

    # -- lifecycle and dispatch -------------------------------------------------------------------
    async def start(self) -> None:
        self._running += 1
        if self._running == 1:
            self.tables.load_file_now()
            await self.client.start()
            await self.tables.start()

    async def stop(self) -> None:
        self._running -= 1
        if self._running == 0:
            await self.tables.stop()
            await self.mirror.drain()
            await self.client.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

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
        if scope["type"] != "http" or is_admin_path(scope["path"]):
            await self.admin(scope, receive, send)
            return
        await self.proxy.handle(head_of(scope), AsgiBody(scope, receive), AsgiClient(send))

    async def handle(self, head: RequestHead, body: RequestBody, client: ClientSide) -> None:
        """The protocol server's entry: admin paths to the Starlette app, the rest proxied."""
        if not is_admin_path(head.path):
            await self.proxy.handle(head, body, client)
            return
        try:
            data = await read_all(body, ADMIN_BODY_MAX)
        except BodyError:
            await client.answer(*json_error(413, "payload_too_large", f"admin request over {ADMIN_BODY_MAX} bytes"))
            return
        # Header values as an ASGI server hands them to an app: without trailing spaces and tabs,
        # which are not part of a value (RFC 9110 5.5); httptools keeps them, uvicorn drops them.
        # So ``Authorization: Bearer TOKEN `` reads as on the controller: the exact token.
        head = dataclasses.replace(head, headers=[(k, v.rstrip(b" \t")) for k, v in head.headers])
        await client.answer(*await call_asgi(self.admin, head, data))

    # -- admin ------------------------------------------------------------------------------------
    async def _get_table(self, request: Request) -> Response:
        require_token(request, self.settings.admin_token)
        return JSONResponse({**self.tables.table.to_dict(), "status": self.tables.status()})

    async def _put_table(self, request: Request) -> Response:
        require_token(request, self.settings.admin_token)
        raw = parse_json(await read_body(request, 1 << 20), "a route table (JSON)")
        try:
            table = parse_table(raw)
        except TableError as exc:
            raise BadRequest(str(exc), code="bad_route_table") from None
        self.tables.set(table)
        return JSONResponse({"version": table.version, "services": sorted(table.services)})

    async def _get_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.snapshot())

    async def _get_mirror(self, request: Request) -> Response:
        require_token(request, self.settings.admin_token)  # its samples are consumers' requests and answers
        return JSONResponse(self.mirror.report())


def is_admin_path(path: str) -> bool:
    """One of the admin app's paths, or under one (``/_router/table``); never a service whose name
    only begins like one (``/metrics-api/...``, ``/healthzcheck``: ``core.routes`` accepts them)."""
    return path.startswith(ADMIN_PATHS) and "/" + path[1:].partition("/")[0] in ADMIN_PATHS


def create_router(settings: Settings, table_source: str = "", table_token: str = "") -> Router:
    return Router(settings, table_source, table_token)


@contextlib.contextmanager
def serve_router_in_thread(router: Router, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The router's protocol server on a free port in a background thread; yields its base URL."""
    server = RouterServer(router.handle, router.proxy.try_fast)

    async def up() -> int:
        await router.start()
        return await server.start(host, port)

    async def down() -> None:
        await server.stop()
        await router.stop()

    with loop_in_thread() as loop:
        bound = asyncio.run_coroutine_threadsafe(up(), loop).result(30)
        try:
            yield f"http://{host}:{bound}"
        finally:
            asyncio.run_coroutine_threadsafe(down(), loop).result(30)


def run_router(router: Router, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM (``python -m canary.router``)."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = RouterServer(router.handle, router.proxy.try_fast)
        await router.start()
        await server.start(host, port)
        try:
            await stop.wait()
        finally:
            await server.stop()
            await router.stop()

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())
