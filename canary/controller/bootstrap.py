"""The controller's composition root: ``bootstrap(settings, ...)`` builds a :class:`Controller`.

Everything it needs can be handed in (the store, the platform, the metric provider, the clock),
so tests drive the engine tick by tick with an injected clock and in-process fakes at the
project's own Protocols; what is not handed in is made from the settings (the store on
``settings.db_url``, ``settings.platform``, the router's counters or ``settings.prometheus_url``,
the service catalog of ``settings.catalog``: a wrong entry stops the start with file, field, line).

With ``settings.webhooks``, the notification outbox is made on the store's engine and hooked into
the store's saves (``controller.notifications``: the app's lifespan runs its sender).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable

from canary.catalog import Catalog
from canary.catalog.settings import catalog_for
from canary.controller.engine import Controller
from canary.controller.notifying import Notifications, make_notifications, read_webhooks
from canary.controller.store import Store, metadata
from canary.platforms import make_platform
from canary.platforms.base import Platform
from canary.providers import make_provider
from canary.providers.base import MetricProvider
from core.db import create_schema, engine_for
from core.settings import Settings


def controller_secrets(settings: Settings) -> frozenset[str]:
    """What no release may inherit from the controller's environment, whatever the variable's name:
    its tokens (entries hand releases their own service's service and table tokens, derived from
    the controller's: ``core.scoped_tokens``), its database URL and its webhooks' secrets."""
    held = {settings.admin_token, settings.alert_token, settings.read_token, settings.db_url}
    held |= {settings.service_token, settings.table_token}
    held |= {w.secret for w in read_webhooks(settings) if w.secret}
    return frozenset(v for v in held if v)


def bootstrap(
    settings: Settings,
    *,
    store: Store | None = None,
    platform: Platform | None = None,
    provider: MetricProvider | None = None,
    clock: Callable[[], float] = time.time,
    stable: dict[str, str] | None = None,
    router_url: str = "",
    public_url: str = "",
    holder: str = "",
    catalog: Catalog | None = None,
    notifications: Notifications | None = None,
) -> Controller:
    """``holder`` names this controller for the lease; by default a unique name, which waits for a
    lease another name holds to expire.  The app passes the state directory's name
    (``canary.controller.lease_holder``), valid while it holds that directory's lock, so that a
    controller restarted in place takes its lease back at once."""
    if store is None:
        engine = engine_for(settings)
        create_schema(engine, metadata)
        store = Store(engine)
    notifications = notifications if notifications is not None else make_notifications(settings, store.engine)
    if notifications is not None:
        store.hooks.append(notifications)
    catalog = catalog if catalog is not None else catalog_for(settings)  # CatalogError: file, field, line
    if platform is None:
        platform = make_platform(settings, public_url, catalog, withheld=controller_secrets(settings))
    controller: Controller

    def consumer_url(consumer: str, release: str) -> str | None:
        return controller.upstreams.get((consumer, release))  # where the platform runs it

    if provider is None:  # a conservation metric reads the counters its consumer's entry names
        provider = make_provider(settings, router_url, consumer_url, catalog.conservation())
    controller = Controller(
        store,
        platform,
        provider,
        {name: e.stable for name, e in catalog.entries.items()} if stable is None else dict(stable),
        clock=clock,
        holder=holder or f"{socket.gethostname()[:32]}:{uuid.uuid4().hex[:16]}",
        admin_token=settings.admin_token,
        catalog=catalog,
        settings=settings,
    )
    controller.public_url, controller.router_url = public_url, router_url
    controller.notifications = notifications
    return controller
