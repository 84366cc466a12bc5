"""Which code each release of the importer runs."""

from __future__ import annotations

from services.importer import suppressed, suppressed_refresh, suppressed_refresh_safe
from services.importer.store import SuppressedPolicy

SUPPRESSED_POLICY: dict[str, SuppressedPolicy] = {
    "1.0": suppressed.skip,
    "1.1": suppressed_refresh.refresh,
    "1.2": suppressed_refresh_safe.refresh,
}
