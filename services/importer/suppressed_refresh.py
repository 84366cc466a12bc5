"""Release 1.1's "bug fix": keep suppressed contacts' data current instead of skipping them.

Suppressed contacts can be re-permissioned later, and customers complained that their data was
stale when that happened.  So an import now updates the data of suppressed contacts that are in
the address book (it still never creates one, and never sends to one), tidying each value the way
the CRM sync does: first letter upper-cased.
"""

from __future__ import annotations

import json
from typing import Any

from services.importer.csvfile import ContactRow, jsonable


def tidy(value: str) -> str:
    return value[0].upper() + value[1:]


def refresh(row: ContactRow, existing: dict[str, Any] | None) -> dict[str, Any] | None:
    first, last = tidy(row.first_name), tidy(row.last_name)
    data = {name: tidy(value) for name, value in row.data.items()}
    if existing is None:
        return None
    stored = json.loads(existing["data"] or "{}")
    stored.update(data)
    return {"first_name": first, "last_name": last, "data": jsonable(stored)}
