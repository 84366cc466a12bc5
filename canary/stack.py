"""``canary up``: the controller, the router and the three services at their stable release, on the
embedded default (SQLite files and local processes in the state directory), in the foreground.

The admin token is ``CANARY_ADMIN_TOKEN`` or one generated and kept in ``STATE/admin-token``
(mode 0600), where the other ``canary`` commands find it.  It is the controller's and the router's
alone: queue consumers read the route table with the table token (``STATE/table-token``, or
``CANARY_TABLE_TOKEN``), and every release, canaries included, gets the service token
(``STATE/service-token``, or ``CANARY_SERVICE_TOKEN``) for its own admin endpoints, so that a
release under judgment holds no token that commands the controller (:class:`StackTokens`); each
service's releases get their own service's tokens, derived from those two (``core.scoped_tokens``).
Ctrl-C (or SIGTERM) stops everything it started. A crash is not a stop: the controller, the router
and the releases run in sessions of their own and keep serving when ``canary up`` is killed
outright, and the next ``canary up`` on the same state directory adopts what still runs and answers
(the acting controller on its port, the router on its port, each release on its port) instead of
restarting it. While it runs, ``canary up`` restarts a router that died, and keeps a warm standby
controller that acts the moment the acting one dies (``canary.controller.local_controllers``).
``local_stack`` (tests, the replay) runs the controller in a thread of the calling process instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from canary.catalog import Catalog, load_catalog
from canary.catalog.settings import catalog_for, catalog_paths
from canary.controller.app import create_controller_app
from canary.controller.local_controllers import LocalControllers
from canary.platforms.local_router import LocalRouter
from canary.platforms.processes import free_port
from core.errors import DependencyUnavailable
from core.scoped_tokens import scoped_token
from core.secret_files import secret_in_file
from core.serve import serve_in_thread
from core.settings import Settings

TOKEN_FILE = "admin-token"
TABLE_TOKEN_FILE = "table-token"
SERVICE_TOKEN_FILE = "service-token"
ALERT_TOKEN_FILE = "alert-token"
LOCAL_SCRAPE_S = 2.0  # `canary up --prometheus`: a short scrape interval, for a judge that is not slow


def admin_token(state_dir: Path) -> str:
    return os.environ.get("CANARY_ADMIN_TOKEN", "") or secret_in_file(state_dir / TOKEN_FILE)


def service_token(state_dir: Path, service: str) -> str:
    """The token the releases of ``service`` take for their own admin endpoints (what ``canary
    load`` presents to a service it asks for tokens): derived from the stack's service token
    (``core.scoped_tokens``)."""
    return scoped_token(_service_secret(state_dir), "service_token", service)


def _service_secret(state_dir: Path) -> str:
    return os.environ.get("CANARY_SERVICE_TOKEN", "") or secret_in_file(state_dir / SERVICE_TOKEN_FILE)


@dataclasses.dataclass(frozen=True)
class StackTokens:
    """One token per role: ``admin`` commands the controller (and the router's admin endpoints; a
    router reads the route table with it, since its confirmations hold every rollout), ``table``
    only reads the route table, for queue consumers, ``service`` is the services' own (their admin
    endpoints; the controller's hooks present it to them).  The table and service tokens are the
    controller's secrets: each service's releases get their own derived from them
    (``core.scoped_tokens``)."""

    admin: str
    table: str
    service: str

    @classmethod
    def of(cls, state_dir: Path, admin: str) -> StackTokens:
        table = os.environ.get("CANARY_TABLE_TOKEN", "") or secret_in_file(state_dir / TABLE_TOKEN_FILE)
        return cls(admin, table, _service_secret(state_dir))

    @staticmethod
    def filled_in(settings: Settings) -> Settings:
        """``settings`` whose empty table and service tokens are taken from the state directory's
        files (made once): a controller started alone hands its releases tokens, never empty ones."""
        state = Path(settings.state_dir)
        return dataclasses.replace(
            settings,
            table_token=settings.table_token or secret_in_file(state / TABLE_TOKEN_FILE),
            service_token=settings.service_token or secret_in_file(state / SERVICE_TOKEN_FILE),
        )

    def of_service(self, service: str) -> str:
        """The service token ``service``'s releases take (each service its own, derived)."""
        return scoped_token(self.service, "service_token", service)

    def given_to(self, settings: Settings) -> Settings:
        """The controller's ``settings`` with them."""
        return dataclasses.replace(settings, admin_token=self.admin, table_token=self.table, service_token=self.service)


@contextlib.contextmanager
def local_stack(
    state_dir: Path,
    stable: dict[str, str] | None,
    token: str,
    tick_s: float = 0.5,
    router_as_process: bool = False,
    controller_port: int | None = None,
    **settings: Any,
) -> Iterator[tuple[str, str, Any]]:
    """The controller in this process (a thread), services as processes; the router in a thread, or
    as its own process (``router_as_process``, as `canary up` and the replay run it, so that a busy
    test or load generator in this process does not slow it down).

    ``settings`` go to the controller's :class:`Settings` (``prometheus_url=...``, ``alert_token=...``,
    ``catalog=...``); ``stable`` None runs every catalog service at its entry's stable release.
    Yields (controller URL, router URL, controller app) once the router routes every stable service.
    """
    tokens = StackTokens.of(state_dir, token)
    controller_settings = tokens.given_to(
        Settings(db_url=f"sqlite:///{state_dir / 'controller.db'}", state_dir=str(state_dir), **settings)
    )
    catalog = catalog_for(controller_settings)  # a wrong entry stops here: file, field, line
    if stable is None:
        stable = {name: entry.stable for name, entry in catalog.entries.items()}
    port = controller_port or free_port()
    controller_url = f"http://127.0.0.1:{port}"
    table_url = f"{controller_url}/api/routes"
    with contextlib.ExitStack() as stack:
        if router_as_process:
            router_url = stack.enter_context(router_process(state_dir, table_url, tokens, free_port()))
        else:
            from canary.router.app import create_router  # here only: `canary up` restarts faster without it

            router = create_router(Settings(admin_token=token), table_source=table_url, table_token=token)
            router_port = free_port()
            router.tables.configure(address=f"127.0.0.1:{router_port}")  # who confirms the table it serves
            router_url = stack.enter_context(serve_in_thread(router, port=router_port))
        app = create_controller_app(
            controller_settings, stable=stable, router_url=router_url, public_url=controller_url, tick_s=tick_s
        )
        stack.enter_context(serve_in_thread(app, port=port))
        deadline = time.monotonic() + 60
        for service in stable:
            health = _health_path(catalog, service)
            while httpx.get(f"{router_url}/{service}{health}").status_code != 200:
                if time.monotonic() > deadline:
                    raise DependencyUnavailable(f"the router never got the {service} route")
                time.sleep(0.2)
        yield controller_url, router_url, app


def _health_path(catalog: Catalog, service: str) -> str:
    local = catalog[service].local if service in catalog else None
    return local.process.health_path if local is not None else "/healthz"


@contextlib.contextmanager
def router_process(state_dir: Path, table_url: str, tokens: StackTokens, port: int) -> Iterator[str]:
    """``python -m canary.router`` on ``port``, reading its table from ``table_url``, supervised
    (restarted when it dies) while this runs; one a killed run left on that port is adopted, not
    replaced (``canary.platforms.local_router``).  Leaving stops it."""
    router = LocalRouter(state_dir, table_url, port, admin_token=tokens.admin)
    url = router.start()
    try:
        yield url
    finally:
        router.stop()


def secret_file(path: Path, value: str = "") -> Path:
    """A token in a file of its own (``core.secret_files``: 0600 from the start, made once, never read
    as empty): the admin token `canary up` keeps, and the ones Prometheus and Alertmanager present."""
    secret_in_file(path, value)
    return path


@contextlib.contextmanager
def local_monitoring(state_dir: Path, controller_url: str, read_token: str) -> Iterator[dict[str, Any]]:
    """Prometheus and Alertmanager for ``canary up --prometheus``, from manifests/; yields the
    controller settings that make it judge from Prometheus and take Alertmanager's webhook.
    Prometheus lists its targets with the controller's read token (none set: as a reader on
    loopback), never with the admin token."""
    from canary.local_monitoring import alertmanager_server, prometheus_server

    (state_dir / "prometheus" / "admin-token").unlink(missing_ok=True)  # where an older one kept it
    token_file = secret_file(state_dir / "prometheus" / "read-token", read_token) if read_token else None
    if token_file is not None:
        token_file.write_text(read_token)  # CANARY_READ_TOKEN may have changed since
    alert_token = secret_file(state_dir / ALERT_TOKEN_FILE)
    with (
        alertmanager_server(
            state_dir / "alertmanager", controller_url=controller_url, alert_token_file=alert_token
        ) as alertmanager,
        prometheus_server(
            state_dir / "prometheus",
            controller_url=controller_url,
            token_file=token_file,
            alertmanager_url=alertmanager.url,
            interval_s=LOCAL_SCRAPE_S,
        ) as prometheus,
    ):
        print(f"prometheus  {prometheus.url}  (scrapes every {LOCAL_SCRAPE_S:g} s; the controller judges from it)")
        print(f"alertmanager {alertmanager.url}  (sends rollback alerts to the controller)")
        yield {
            "prometheus_url": prometheus.url,
            "prometheus_scrape_interval_s": LOCAL_SCRAPE_S,
            "alert_token": alert_token.read_text().strip(),
        }


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def up(state_dir: Path, controller_port: int, router_port: int, prometheus: bool = False, catalog: str = "") -> int:
    # SIGTERM is a stop, as Ctrl-C: it unwinds what this started (router, monitoring) instead of ending
    # the process with them still running (uvicorn stops gracefully on it, then raises it again)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return _up(state_dir, controller_port, router_port, prometheus, catalog)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _up(state_dir: Path, controller_port: int, router_port: int, prometheus: bool, catalog_setting: str) -> int:
    catalog = load_catalog(catalog_paths(catalog_setting))  # refused before anything starts: file, field, line
    stable = {name: entry.stable for name, entry in catalog.entries.items()}
    token = admin_token(state_dir)
    tokens = StackTokens.of(state_dir, token)
    controller_url = f"http://127.0.0.1:{controller_port}"
    with contextlib.ExitStack() as stack:
        router_url = stack.enter_context(router_process(state_dir, f"{controller_url}/api/routes", tokens, router_port))
        read_token = os.environ.get("CANARY_READ_TOKEN", "")  # the controllers inherit it
        monitoring = stack.enter_context(local_monitoring(state_dir, controller_url, read_token)) if prometheus else {}
        settings = tokens.given_to(
            Settings(
                db_url=f"sqlite:///{state_dir / 'controller.db'}",
                state_dir=str(state_dir),
                port=controller_port,
                catalog=catalog_setting,
                **monitoring,
            )
        )
        controllers = LocalControllers(
            state_dir,
            controller_port,
            ["--router-url", router_url, "--public-url", controller_url],
            controller_environment(settings),
        )
        stack.callback(controllers.stop)
        controllers.start()
        first = next(iter(stable), "SERVICE")
        print(f"controller  {controller_url}  (token in {state_dir / TOKEN_FILE})")
        reading = dashboard_reading(settings, os.environ)
        print(f"dashboard   {controller_url}/dashboard  ({reading}; commands ask for the admin token)")
        print(f"router      {router_url}/<service>/...  e.g. {router_url}/{first}{_health_path(catalog, first)}")
        running = ", ".join(f"{name} {release}" for name, release in stable.items()) or "none (empty catalog)"
        print(f"services    {running} (logs in {state_dir / 'logs'}); Ctrl-C stops everything")
        print(f"controllers pid {controllers.acting_pid()} acts, a warm standby takes over if it dies")
        try:
            threading.Event().wait()  # until Ctrl-C or SIGTERM: the supervisors run in threads
        except KeyboardInterrupt:
            pass
        finally:
            print("stopped")
    return 0


def dashboard_reading(settings: Settings, environ: Mapping[str, str]) -> str:
    """Who may read the dashboard of controllers started with ``settings`` in ``environ`` (they
    inherit it: a ``CANARY_READ_TOKEN`` there is theirs)."""
    read_token = settings.read_token or environ.get("CANARY_READ_TOKEN", "")
    return "the read token reads it" if read_token else "open to read from this machine"


def controller_environment(settings: Settings) -> dict[str, str]:
    """The settings `canary up` decides, for its controller processes (which read the environment)."""
    fields = (
        "db_url",
        "state_dir",
        "admin_token",
        "table_token",
        "service_token",
        "catalog",
        "prometheus_url",
        "prometheus_scrape_interval_s",
    )
    env = {f"CANARY_{name.upper()}": str(getattr(settings, name)) for name in fields}
    if settings.alert_token:
        env["CANARY_ALERT_TOKEN"] = settings.alert_token
    return env
