"""The controller's dashboard: one self-contained page (``page.html``), the JSON it reads, and a
server-sent event stream that tells it what changed.

Sits on the controller's app (``canary.controller.app`` mounts :func:`routes` and, in its lifespan,
:func:`attach`): it reads the controller and its store, hooks the store's saves for the live stream
and the chart series, and writes nothing else.  Commands go through the controller's API.
"""

from __future__ import annotations

import asyncio

from canary.controller.dashboard.live import Live
from canary.controller.dashboard.series import Series
from canary.controller.dashboard.views import routes
from canary.controller.engine import Controller

__all__ = ["Live", "Series", "attach", "routes"]


def attach(controller: Controller) -> Live:
    """The live stream and chart series on ``controller``'s store, hooked into its saves."""
    live = Live(controller, Series(controller.store.engine), asyncio.get_running_loop())
    controller.store.hooks.append(live)
    return live
