"""The controller's notifications: every decision the store saves becomes its event in the outbox,
in the same transaction (``canary.notify``), and the sender delivers it beside the loop.

Sits between the store (a :class:`~canary.controller.store.SaveHook`) and ``canary.notify``;
``bootstrap`` makes it from ``settings.webhooks`` (a YAML file) and the app's lifespan runs its
sender as a task.  A tick never waits for a receiver: enqueueing is one insert in the save's own
transaction, delivery happens in the sender's task.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from canary.controller import machine
from canary.controller.evidence_figures import figures
from canary.controller.store import Saved
from canary.notify import Outbox, Sender, Transition, Webhook, event_for, load_webhooks
from core.errors import ConfigError
from core.settings import Settings

MAX_WEBHOOKS_FILE = 256 * 1024


class Notifications:
    """The store's hook that turns decisions into events, and the sender that delivers them."""

    def __init__(self, outbox: Outbox, sender: Sender) -> None:
        self.outbox, self.sender = outbox, sender

    def on_save(self, conn: Connection, saved: Saved) -> None:
        r, step = saved.rollout, saved.step_before
        for i, (number, d) in enumerate(saved.decisions):
            last = i == len(saved.decisions) - 1
            event = event_for(
                Transition(
                    r.id,
                    number,
                    r.spec.service,
                    r.spec.stable,
                    r.spec.canary,
                    d.phase_from,
                    d.phase_to,
                    d.reason,
                    step_from=step,
                    step_to=r.step if last else step,
                    held=d.phase_from == d.phase_to and d.reason.startswith("held: "),
                    inconclusive=d.decided_by == machine.DecidedBy.INCONCLUSIVE,
                    evidence=evidence_line(d.evidence),
                )
            )
            if event is not None:
                self.outbox.enqueue_on(conn, event)

    def committed(self, rollout_id: str, what: str) -> None:
        if what == "decision":
            self.sender.wake()


def evidence_line(evidence: dict[str, Any]) -> str:
    """The judge's numbers in one line for chat: per metric its e-value against its threshold and the
    bad counts per track, where the evidence has them; else the evidence itself, compact."""
    parts = []
    for metric, ev in evidence.items():
        f = figures(ev)
        if f is None:
            continue
        text = f"{metric}: e-value {_num(f.e_value)}" + (f" (fails at {_num(f.threshold)})" if f.threshold else "")
        if f.canary_requests is not None and f.stable_requests is not None:
            text += f", canary {f.canary_bad} bad of {f.canary_requests}, stable {f.stable_bad} of {f.stable_requests}"
        parts.append(text)
    if parts:
        return "; ".join(parts)
    return json.dumps(evidence, default=str, separators=(",", ":"))[:300] if evidence else ""


def _num(value: float | None) -> str:
    return f"{value:.3g}" if value is not None and math.isfinite(value) else str(value)


def read_webhooks(settings: Settings) -> tuple[Webhook, ...]:
    """The webhooks of ``settings.webhooks`` (a YAML file; empty: none).  A bad file is a
    :class:`ConfigError` naming the file, the field and the line."""
    if not settings.webhooks:
        return ()
    path = Path(settings.webhooks)
    try:
        if path.stat().st_size > MAX_WEBHOOKS_FILE:
            raise ConfigError(f"{path}: larger than {MAX_WEBHOOKS_FILE} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"webhooks: cannot read {path}: {exc}") from None
    return load_webhooks(text, str(path))


def make_notifications(settings: Settings, engine: Engine) -> Notifications | None:
    """The outbox on ``engine`` and its sender, for ``settings.webhooks``; None when there are none."""
    hooks = read_webhooks(settings)
    if not hooks:
        return None
    outbox = Outbox(engine, hooks)
    return Notifications(outbox, Sender(outbox))
