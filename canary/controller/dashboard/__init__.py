"""The controller's dashboard: one self-contained page (``page.html``), the JSON it reads, and a
server-sent event stream that tells it what changed.

Sits on the controller's app (``canary.controller.app`` mounts :func:`routes` and, in its lifespan,
:func:`attach`): it reads the controller and its store, hooks the store's saves for the live stream
and the chart series (and its group store's saves, for the live stream), and writes nothing else.
Commands go through the controller's API.
"""

from __future__ import annotations

import asyncio

from canary.controller.dashboard.groups import GroupReader, watch_groups
from canary.controller.dashboard.live import Change, Live
from canary.controller.dashboard.series import Series
from canary.controller.dashboard.views import routes
from canary.controller.engine import Controller

__all__ = ["Live", "Series", "attach", "routes"]


def attach(controller: Controller) -> Live:
    """The live stream and chart series on ``controller``'s store, hooked into its saves (its
    rollouts' and its groups')."""
    engine = controller.store.engine
    live = Live(controller, Series(engine), asyncio.get_running_loop(), GroupReader(engine))
    controller.store.hooks.append(live)
    watch_groups(controller, live.group_saved)
    # a pending rollout's not-ready words are kept in memory, not stored: the observer says when they change
    controller.observer.listeners.append(lambda rollout_id: live.publish(Change(rollout_id, "waiting")))
    return live
