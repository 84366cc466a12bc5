"""What an import does with a contact that is on the suppression list: release 1.0.

Release 1.0 skips such contacts and counts them: their data stays as it was.  Releases 1.1 and
1.2 refresh it instead (``suppressed_refresh``).
"""

from __future__ import annotations

from typing import Any

from services.importer.csvfile import ContactRow


def skip(row: ContactRow, existing: dict[str, Any] | None) -> dict[str, Any] | None:
    """The new field values for a suppressed contact, or None to leave it alone (1.0: always)."""
    return None
