"""Notifications: outbound webhooks on a rollout's events, through an outbox in the store.

Where it sits: beside the controller, which knows nothing of HTTP receivers.  The controller makes
a typed :class:`RolloutEvent` at each transition and stores it in the outbox; a :class:`Sender`
task delivers the outbox to every configured :class:`Webhook`.  A tick never waits for a receiver.

How the controller uses it (``canary.controller.notifying``, made by ``bootstrap`` from
``CANARY_WEBHOOKS``, does this; the app's lifespan runs the sender)::

    hooks = load_webhooks(path.read_text(), str(path))       # or parse_webhooks(settings_list)
    outbox = Outbox(engine, hooks)                           # creates its two tables if missing
    sender = Sender(outbox)
    task = asyncio.create_task(sender.run())                 # in the controller's lifespan (two
                                                             # senders on one database share the
                                                             # work: a delivery is claimed first)
    # at a transition, inside the store's transaction (stored exactly when the transition is):
    outbox.enqueue_on(conn, event)
    # or, outside a transaction (from a thread: asyncio.to_thread(outbox.enqueue, event)):
    outbox.enqueue(event)
    sender.wake()                                            # optional: deliver now, not at the next poll
    ...
    task.cancel()                                            # at shutdown; nothing is lost

Which decision gives which event is :func:`canary.notify.transitions.event_for` (tested): the
canary first gets traffic (``started``), a step or the mirror phase passes (``step_passed``, its
step counted from 1), its metrics source does not answer (``held``), a person or the spec pauses
it (``paused``), it reaches ``rolled_back`` (``rolled_back``, with the reason and the judge's
evidence), it reaches ``promoting`` (``promoted``), its watch ends (``watch_ended``), a step ends
inconclusive (``inconclusive``), it cannot run at all (``failed``).  The event's id is the
rollout id and the decision's number: a controller that re-does a transition after a crash stores
the same event once.  So the controller's part is, for each decision it stores::

    event = event_for(Transition(r.id, n, r.service, r.stable, r.canary, d.phase_from, d.phase_to,
                                 d.reason, step_from=..., step_to=..., held=..., inconclusive=...))
    if event:
        outbox.enqueue_on(conn, event)

Guarantees, each kept by a test in ``tests/canary/notify/``: every event reaches every webhook
that wants it once (receivers can dedupe on ``X-Releasewarden-Event-Id`` for the rare resend of a
sender killed mid-delivery); bodies are signed (``canary.notify.payloads``); a receiver that is
down gets its events, in order, after it is back; a new sender on the same database sends nothing
twice, nor do two senders at once; events the database refused wait in memory and are stored by the next pass.
"""

from canary.notify.events import EventKind, RolloutEvent
from canary.notify.outbox import Enqueued, Outbox, QueueStatus
from canary.notify.payloads import verify
from canary.notify.sender import RetryPolicy, Sender
from canary.notify.transitions import Transition, event_for
from canary.notify.webhooks import Webhook, WebhookConfigError, WebhookKind, load_webhooks, parse_webhooks

__all__ = [
    "Enqueued",
    "EventKind",
    "Outbox",
    "QueueStatus",
    "RetryPolicy",
    "RolloutEvent",
    "Sender",
    "Transition",
    "Webhook",
    "WebhookConfigError",
    "WebhookKind",
    "event_for",
    "load_webhooks",
    "parse_webhooks",
    "verify",
]
