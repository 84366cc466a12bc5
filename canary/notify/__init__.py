"""Notifications: outbound webhooks on a rollout's events, through an outbox in the store.

Where it sits: beside the controller, which knows nothing of HTTP receivers.  The controller makes
a typed :class:`RolloutEvent` at each transition and stores it in the outbox; a :class:`Sender`
task delivers the outbox to every configured :class:`Webhook`.  A tick never waits for a receiver.

How the controller uses it (the coordinator wires this into ``bootstrap``)::

    hooks = load_webhooks(path.read_text(), str(path))       # or parse_webhooks(settings_list)
    outbox = Outbox(engine, hooks)                           # creates its two tables if missing
    sender = Sender(outbox)
    task = asyncio.create_task(sender.run())                 # in the controller's lifespan; only
                                                             # while it holds the lease, ideally
    # at a transition, inside the store's transaction (stored exactly when the transition is):
    outbox.enqueue_on(conn, RolloutEvent(EventKind.ROLLED_BACK, r.id, r.service, r.stable,
                                         r.canary, reason=..., evidence=..., id=f"{r.id}-{seq}"))
    # or, outside a transaction (a thread: asyncio.to_thread(outbox.enqueue, event)):
    outbox.enqueue(event)
    sender.wake()                                            # optional: deliver now, not at the next poll
    ...
    task.cancel()                                            # at shutdown; nothing is lost

Which transition gives which event: the rollout is created (``started``), a step's verdict is pass
and the weight moves on (``step_passed``, with ``step``), its metrics source does not answer
(``held``), a person or the spec pauses it (``paused``), it reaches ``rolled_back``
(``rolled_back``, the reason and the judge's evidence), it reaches ``promoting`` (``promoted``),
its watch ends with success (``watch_ended``), a step ends inconclusive (``inconclusive``).  Give
each event a deterministic ``id`` (rollout id and decision number): a controller that re-does a
transition after a crash then stores the same event once.

Guarantees, each kept by a test in ``tests/canary/notify/``: every event reaches every webhook
that wants it once (receivers can dedupe on ``X-Releasewarden-Event-Id`` for the rare resend of a
sender killed mid-delivery); bodies are signed (``canary.notify.payloads``); a receiver that is
down gets its events, in order, after it is back; a new sender on the same database sends nothing
twice; events the database refused wait in memory and are stored by the next pass.
"""

from canary.notify.events import EventKind, RolloutEvent
from canary.notify.outbox import Enqueued, Outbox, QueueStatus
from canary.notify.payloads import verify
from canary.notify.sender import RetryPolicy, Sender
from canary.notify.webhooks import Webhook, WebhookConfigError, WebhookKind, load_webhooks, parse_webhooks

__all__ = [
    "Enqueued",
    "EventKind",
    "Outbox",
    "QueueStatus",
    "RetryPolicy",
    "RolloutEvent",
    "Sender",
    "Webhook",
    "WebhookConfigError",
    "WebhookKind",
    "load_webhooks",
    "parse_webhooks",
    "verify",
]
