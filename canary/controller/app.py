"""The controller as an app: its API, its loop in the lifespan, its store on the database.

``create_controller_app(settings, stable=..., router_url=...)``: the controller from
``bootstrap`` (the store on ``settings.db_url``, SQLite by default; the platform running releases,
``settings.platform``: local processes or Kubernetes Deployments; the metric provider, the router's
counters at ``router_url`` or Prometheus at ``settings.prometheus_url``), and its loop; the
notification sender (with ``settings.webhooks``) as a task beside the loop; the dashboard at
``/dashboard`` with its live stream (``canary.controller.dashboard``).
The controller's name for the lease is its state directory's while it holds that directory's lock
(``canary.controller.lease_holder``): restarted in place, it acts again at once; a warm standby
hands in the lock it waited for (``holder``).
On shutdown every local process the platform started is stopped.  A stable release that cannot
start stops the controller at start, its reason on one ``error: ...`` line of stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from canary.catalog.settings import catalog_for
from canary.controller import api, dashboard
from canary.controller.bootstrap import bootstrap
from canary.controller.lease_holder import LeaseHolder, lease_holder
from canary.controller.metrics import RolloutCollector
from canary.controller.notifying import read_webhooks
from canary.controller.store import Store, metadata
from core.app import create_app
from core.errors import ReleaseWardenError
from core.settings import Settings


def create_controller_app(
    settings: Settings,
    *,
    stable: dict[str, str],
    router_url: str,
    public_url: str,
    tick_s: float = 1.0,
    holder: LeaseHolder | None = None,
) -> Starlette:
    """``holder``: the lease name this controller acts under, its lock already held (the warm standby
    took it before serving); by default the lifespan takes the state directory's if it is free."""
    settings = settings.with_overrides(service="controller")
    read_webhooks(settings)  # a bad webhooks file stops the controller here, in words, before it serves
    catalog = catalog_for(settings)  # and so does a wrong catalog entry (CatalogError: file, field, line)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # this state directory's name while no other controller runs on it
        held = holder or lease_holder(settings.state_dir)
        controller = bootstrap(
            settings,
            store=Store(app.state.engine),
            stable=stable,
            router_url=router_url,
            public_url=public_url,
            holder=held.name,
            catalog=catalog,
        )
        platform = controller.platform
        app.state.controller = controller
        app.state.metrics.registry.register(RolloutCollector(controller))
        app.state.dashboard = live = dashboard.attach(controller)
        tasks: list[asyncio.Task[None]] = []
        try:
            if controller.notifications is not None:  # delivers beside the loop: a tick never waits for it
                tasks.append(asyncio.create_task(controller.notifications.sender.run()))
            try:
                await controller.start_stable()
            except ReleaseWardenError as exc:  # the server logs a traceback after it: this line says why
                words = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                print(f"error: {words}", file=sys.stderr, flush=True)
                raise
            tasks.append(asyncio.create_task(controller.run(tick_s)))
            yield
        finally:
            live.close()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await controller.starts.stop_all()  # a release still starting is stopped, not left running
            await platform.close()
            held.close()  # last: once the loop no longer runs, the name is free for the next controller

    return create_app(settings, api.routes() + dashboard.routes(), lifespan=lifespan, metadata=metadata)
