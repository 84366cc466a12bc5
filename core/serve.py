"""Command-line serving: ``python -m services.<name> --release R --port N --db URL``.

Each service's ``__main__`` hands its app factory and its known releases to :func:`serve_main`,
which parses flags, loads settings (flags over environment over YAML), and runs uvicorn.  Bad flags
and bad settings end with one line on stderr and exit status 2, never a traceback.

Every server started here (:func:`run_server`, :func:`serve_in_thread`) sets its app's
:func:`shutdown_signal` as soon as it begins to stop (SIGTERM, Ctrl-C, leaving the block), before it
waits for open responses to finish: a response that would otherwise run on (a server-sent event
stream) watches the signal and ends, so a stopping server is not held by an open browser tab.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette

from core.errors import ConfigError
from core.settings import Settings, load_settings

# How long an idle keep-alive connection stays open.  Longer than the clients' pools keep theirs
# (httpx 5 s, the router's upstream pool 30 s): the client always gives up first, so no request is
# ever sent on a connection the server is closing at that moment (uvicorn's default is 5 s, the
# same as httpx's, and the race showed as stray errors and ReadErrors under load).
KEEP_ALIVE_S = 75


class ShutdownSignal:
    """Set once, when the app's server begins to stop; callbacks watching it run then (in the
    server's thread, on its event loop), or at once if it is set already."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.is_set = False

    def watch(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self.is_set:
                self._callbacks.append(callback)
                return
        callback()

    def set(self) -> None:
        with self._lock:
            if self.is_set:
                return
            self.is_set = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


# one signal per app object: the server that runs it and the responses that watch it find the same
_signals: weakref.WeakKeyDictionary[Any, ShutdownSignal] = weakref.WeakKeyDictionary()
_signals_lock = threading.Lock()


def shutdown_signal(app: Any) -> ShutdownSignal:
    """The signal that ``app``'s server is stopping (a Starlette view finds its app as ``request.app``)."""
    with _signals_lock:
        found = _signals.get(app)
        if found is None:
            found = _signals[app] = ShutdownSignal()
        return found


class _Server(uvicorn.Server):
    """uvicorn's server, which first tells the app it is stopping: uvicorn waits for every open
    response to finish before the app's lifespan hears of the shutdown, too late for a stream."""

    def __init__(self, config: uvicorn.Config, signal: ShutdownSignal) -> None:
        super().__init__(config)
        self.signal = signal

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.signal.set()
        await super().shutdown(sockets)


def _server(app: Any, host: str, port: int, **config: Any) -> _Server:
    config.setdefault("timeout_keep_alive", KEEP_ALIVE_S)
    return _Server(uvicorn.Config(app, host=host, port=port, **config), shutdown_signal(app))


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a background thread on a free port; yield its base URL.

    For tests and benchmarks that need a real server on 127.0.0.1 inside the same process.
    """
    if not port:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "on")
    server = _server(app, host, port, **config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("server thread exited at start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def build_parser(prog: str, releases: Sequence[str], description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--release", help=f"release to run: {', '.join(releases)} (default CANARY_RELEASE, else 1.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--db", dest="db_url", help="database URL: sqlite:///PATH or postgresql://...")
    parser.add_argument("--state-dir", help="directory for local state (default ./state)")
    parser.add_argument("--config", help="YAML settings file (also CANARY_CONFIG)")
    parser.add_argument("--log-level", default=None, help="uvicorn log level (default warning)")
    parser.add_argument("--track", choices=("stable", "canary"), help="queue consumers: which track this is")
    parser.add_argument("--route-table", help="queue consumers: route table file or URL to take their share from")
    return parser


def settings_from_args(service: str, releases: Sequence[str], args: argparse.Namespace) -> Settings:
    settings = load_settings(
        config_file=args.config,
        service=service,
        release=args.release,  # else CANARY_RELEASE or the config file, as for every setting
        port=args.port,
        host=args.host,
        db_url=args.db_url,
        state_dir=args.state_dir,
        log_level=args.log_level,
        track=args.track,
        route_table=args.route_table,
    )
    if settings.release not in releases:
        raise ConfigError(f"unknown release {settings.release!r} of {service}: choose one of {', '.join(releases)}")
    return settings


def serve_main(
    service: str,
    releases: Sequence[str],
    factory: Callable[[Settings], Starlette],
    argv: Sequence[str] | None = None,
    description: str = "",
    prog: str | None = None,
) -> int:
    prog = prog or f"python -m services.{service}"
    parser = build_parser(prog, releases, description or f"Run the {service} service.")
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(service, releases, args)
        app = factory(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_server(app, settings.host, settings.port, settings.log_level)
    return 0


def run_server(
    app: Any,
    host: str,
    port: int,
    log_level: str = "warning",
    sockets: list[socket.socket] | None = None,
    **config: Any,
) -> None:
    """Run an ASGI app under uvicorn in the foreground, as every command of the project does:
    no access log, idle connections kept ``KEEP_ALIVE_S``, and the app's shutdown signal set when it
    begins to stop.  ``sockets``: listening sockets to serve on instead of binding ``host:port`` (one
    handed down, which connections queue on while no process accepts).  A server that never started
    (its port taken) exits with status 3, as uvicorn's."""
    server = _server(app, host, port, log_level=log_level, access_log=False, **config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)
