"""``canary up``: the controller, the router and the three services at their stable release, on the
embedded default (SQLite files and local processes in the state directory), in the foreground.

The admin token is ``CANARY_ADMIN_TOKEN`` or one generated and kept in ``STATE/admin-token``
(mode 0600), where the other ``canary`` commands find it.  Ctrl-C stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from canary.controller.app import create_controller_app
from canary.platforms.processes import free_port, wait_ready_url
from canary.router.app import create_router
from core.errors import DependencyUnavailable
from core.serve import run_server, serve_in_thread
from core.settings import Settings

STABLE = {"importer": "1.0", "opens": "1.0", "resizer": "1.0"}
TOKEN_FILE = "admin-token"
ALERT_TOKEN_FILE = "alert-token"
LOCAL_SCRAPE_S = 2.0  # `canary up --prometheus`: a short scrape interval, for a judge that is not slow
ROUTER_PID = "router.pid"


def admin_token(state_dir: Path) -> str:
    return os.environ.get("CANARY_ADMIN_TOKEN", "") or secret_file(state_dir / TOKEN_FILE).read_text().strip()


@contextlib.contextmanager
def local_stack(
    state_dir: Path,
    stable: dict[str, str],
    token: str,
    tick_s: float = 0.5,
    router_as_process: bool = False,
    controller_port: int | None = None,
    **settings: Any,
) -> Iterator[tuple[str, str, Any]]:
    """The controller in this process (a thread), services as processes; the router in a thread, or
    as its own process (``router_as_process``, as `canary up` and the replay run it, so that a busy
    test or load generator in this process does not slow it down).

    ``settings`` go to the controller's :class:`Settings` (``prometheus_url=...``, ``alert_token=...``).
    Yields (controller URL, router URL, controller app) once the router routes every stable service.
    """
    port = controller_port or free_port()
    controller_url = f"http://127.0.0.1:{port}"
    table_url = f"{controller_url}/api/routes"
    with contextlib.ExitStack() as stack:
        if router_as_process:
            router_url = stack.enter_context(router_process(state_dir, table_url, token, free_port()))
        else:
            router = create_router(Settings(admin_token=token), table_source=table_url, table_token=token)
            router_url = stack.enter_context(serve_in_thread(router))
        controller_settings = Settings(
            db_url=f"sqlite:///{state_dir / 'controller.db'}", state_dir=str(state_dir), admin_token=token, **settings
        )
        app = create_controller_app(
            controller_settings, stable=stable, router_url=router_url, public_url=controller_url, tick_s=tick_s
        )
        stack.enter_context(serve_in_thread(app, port=port))
        deadline = time.monotonic() + 60
        for service in stable:
            while httpx.get(f"{router_url}/{service}/healthz").status_code != 200:
                if time.monotonic() > deadline:
                    raise DependencyUnavailable(f"the router never got the {service} route")
                time.sleep(0.2)
        yield controller_url, router_url, app


@contextlib.contextmanager
def router_process(state_dir: Path, table_url: str, token: str, port: int) -> Iterator[str]:
    """``python -m canary.router`` in its own session, reading its table from ``table_url``; its pid
    is kept in the state directory so that a later run can stop it if this one is killed."""
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    stop_leftover_router(state_dir)
    with (state_dir / "logs" / "router.log").open("ab") as log:
        router = subprocess.Popen(
            [sys.executable, "-m", "canary.router", "--table", table_url, "--port", str(port)],
            env={**os.environ, "CANARY_TABLE_TOKEN": token, "CANARY_ADMIN_TOKEN": token},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state_dir / ROUTER_PID).write_text(str(router.pid))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready_url(f"{url}/healthz", router)
        yield url
    finally:
        router.terminate()
        try:
            router.wait(10)
        except subprocess.TimeoutExpired:
            router.kill()
        (state_dir / ROUTER_PID).unlink(missing_ok=True)


def stop_leftover_router(state_dir: Path) -> None:
    """A router left running by a ``canary up`` that was killed (it runs in its own session)."""
    path = state_dir / ROUTER_PID
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
        time.sleep(0.5)
    path.unlink(missing_ok=True)


def secret_file(path: Path, value: str = "") -> Path:
    """A token in a file of its own (mode 0600), made once: the admin token `canary up` keeps, and the
    ones Prometheus and Alertmanager present."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value or secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path


@contextlib.contextmanager
def local_monitoring(state_dir: Path, controller_url: str, token: str) -> Iterator[dict[str, Any]]:
    """Prometheus and Alertmanager for ``canary up --prometheus``, from manifests/; yields the
    controller settings that make it judge from Prometheus and take Alertmanager's webhook."""
    from canary.local_monitoring import alertmanager_server, prometheus_server

    token_file = secret_file(state_dir / "prometheus" / "admin-token", token)
    token_file.write_text(token)  # CANARY_ADMIN_TOKEN may have changed since
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


def up(state_dir: Path, controller_port: int, router_port: int, prometheus: bool = False) -> int:
    token = admin_token(state_dir)
    controller_url = f"http://127.0.0.1:{controller_port}"
    with contextlib.ExitStack() as stack:
        router_url = stack.enter_context(router_process(state_dir, f"{controller_url}/api/routes", token, router_port))
        monitoring = stack.enter_context(local_monitoring(state_dir, controller_url, token)) if prometheus else {}
        settings = Settings(
            db_url=f"sqlite:///{state_dir / 'controller.db'}",
            state_dir=str(state_dir),
            admin_token=token,
            port=controller_port,
            **monitoring,
        )
        app = create_controller_app(settings, stable=STABLE, router_url=router_url, public_url=controller_url)
        print(f"controller  {controller_url}  (token in {state_dir / TOKEN_FILE})")
        print(f"router      {router_url}/<service>/...  e.g. {router_url}/resizer/healthz")
        print(
            f"services    importer 1.0, opens 1.0, resizer 1.0 (logs in {state_dir / 'logs'}); Ctrl-C stops everything"
        )
        try:
            run_server(app, "127.0.0.1", controller_port)
        finally:
            print("stopped")
    return 0
