"""Shared fixtures: a database URL per backend (real SQLite file, real PostgreSQL) and an ASGI client.

PostgreSQL tests need ``CANARY_TEST_PG_URL`` (``make test`` starts a server and sets it).  Outside
CI they are skipped without it; in CI (``CI=true``) a missing server is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from starlette.applications import Starlette

from core.db import normalise_url

PG_ENV = "CANARY_TEST_PG_URL"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pg_base_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url and os.environ.get("CI"):
        pytest.fail(f"{PG_ENV} is not set: `make test` starts PostgreSQL and sets it")
    return url


@contextlib.contextmanager
def pg_schema_url(base: str) -> Iterator[str]:
    """A fresh schema per test: fast, isolated, dropped afterwards."""
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(normalise_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    base = pg_base_url()
    if not base:
        pytest.skip(f"{PG_ENV} not set (run through `make test`)")
    with pg_schema_url(base) as url:
        yield url


@contextlib.asynccontextmanager
async def asgi_client(app: Starlette, **kwargs: object) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it in-process through httpx.ASGITransport."""
    async with app.router.lifespan_context(app):
        # like a real server: the 500 is answered and the error logged, not raised into the client
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", **kwargs) as client:  # type: ignore[arg-type]
            yield client


async def healthz_answers_while_held(
    c: httpx.AsyncClient, entered: threading.Event, answered: threading.Event, what: str, seconds: float
) -> None:
    """Once ``entered`` is set (a worker holds its work until ``answered``), ``/healthz`` must answer
    meanwhile; then ``answered`` lets the work go on.  Held on the event loop, nothing would answer."""
    deadline = time.monotonic() + seconds
    while not entered.is_set():
        assert time.monotonic() < deadline, f"{what} never started"
        await asyncio.sleep(0.01)
    assert (await c.get("/healthz")).status_code == 200
    answered.set()


def need_monitoring() -> None:
    """Prometheus and Alertmanager tests: skipped outside CI when the servers are missing, an error in
    CI (``make test`` installs them with tests/infra/monitoring.sh)."""
    missing = [n for n in ("prometheus", "promtool", "amtool") if not shutil.which(n)]
    if not (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")):
        missing.append("prometheus-alertmanager")
    if not missing:
        return
    message = f"not installed: {', '.join(missing)} (run `make test`: tests/infra/monitoring.sh installs them)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def wait_for_rollout(
    controller_url: str,
    rollout_id: str,
    until: Callable[[dict[str, Any]], bool],
    headers: dict[str, str],
    seconds: float,
) -> dict[str, Any]:
    """Poll the controller's view of a rollout until ``until(rollout)``; fail with its phase and reason."""
    deadline = time.monotonic() + seconds
    while True:
        r: dict[str, Any] = httpx.get(f"{controller_url}/api/rollouts/{rollout_id}", headers=headers).json()
        if until(r):
            return r
        assert time.monotonic() < deadline, f"still {r['phase']}: {r['reason']}"
        time.sleep(0.3)


@contextlib.contextmanager
def load_in_background(config: Any) -> Iterator[list[dict[str, Any]]]:
    """`canary load` (a ``LoadConfig``) in a thread while the block runs; stopped and joined after.
    Yields a list that holds the load's report once the block has ended."""
    import threading

    from canary.traffic.load import run

    stop = threading.Event()
    reports: list[dict[str, Any]] = []
    thread = threading.Thread(
        target=lambda: reports.append(run(config, stop=stop)), name="background-load", daemon=True
    )
    thread.start()
    try:
        yield reports
    finally:
        stop.set()
        thread.join(60)
