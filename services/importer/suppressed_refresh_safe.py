"""Release 1.2: the same refresh of suppressed contacts, with empty cells handled.

An empty cell leaves the stored value as it is (as for any other contact), and tidying an empty
value is a no-op.
"""

from __future__ import annotations

from typing import Any

from services.importer.csvfile import ContactRow
from services.importer.store import merge


def tidy(value: str) -> str:
    return value[:1].upper() + value[1:]


def refresh(row: ContactRow, existing: dict[str, Any] | None) -> dict[str, Any] | None:
    if existing is None:
        return None
    tidied = ContactRow(
        row.line, row.email, tidy(row.first_name), tidy(row.last_name), {k: tidy(v) for k, v in row.data.items()}
    )
    return merge(tidied, existing)
