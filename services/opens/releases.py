"""Which code each release of the open tracker runs (the processor's event handling)."""

from __future__ import annotations

from services.opens import handling, handling_batched, handling_batched_safe
from services.opens.processing import Handler

HANDLERS: dict[str, Handler] = {
    "1.0": handling.outcomes,
    "1.1": handling_batched.outcomes,
    "1.2": handling_batched_safe.outcomes,
}
