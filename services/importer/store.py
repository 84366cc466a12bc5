"""Writing an import: one transaction, bulk statements, an idempotency key.

Lookups of existing and suppressed contacts go by chunks of emails; inserts and updates go through
the driver's ``executemany`` with tuples (the fastest path SQLAlchemy offers, see DESIGN.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from core.db import placeholder, write_transaction
from core.errors import Conflict
from services.importer.csvfile import ContactRow, jsonable
from services.importer.schema import contacts, imports, suppressions

LOOKUP_CHUNK = 5000  # below SQLite's 32766 and PostgreSQL's 65535 bound parameters
MAX_REJECTIONS_KEPT = 1000

SuppressedPolicy = Callable[[ContactRow, dict[str, Any] | None], dict[str, Any] | None]


def find_import(conn: Connection, book_id: int, key: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(imports.c.result).where(imports.c.address_book_id == book_id, imports.c.idempotency_key == key)
    ).first()
    return json.loads(row[0]) if row else None


def get_import(engine: Engine, import_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(imports.c.result).where(imports.c.id == import_id)).first()
    return json.loads(row[0]) if row else None


def _chunks(emails: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(emails), LOOKUP_CHUNK):
        yield emails[i : i + LOOKUP_CHUNK]


def existing_contacts(conn: Connection, book_id: int, emails: list[str]) -> dict[str, dict[str, Any]]:
    cols = (contacts.c.id, contacts.c.email, contacts.c.first_name, contacts.c.last_name, contacts.c.data)
    found: dict[str, dict[str, Any]] = {}
    if conn.execute(select(contacts.c.id).where(contacts.c.address_book_id == book_id).limit(1)).first() is None:
        return found  # a new address book: nothing to look up
    for chunk in _chunks(emails):
        query = select(*cols).where(contacts.c.address_book_id == book_id, contacts.c.email.in_(chunk))
        found.update((r.email, r._asdict()) for r in conn.execute(query))
    return found


def suppressed_emails(conn: Connection, emails: list[str]) -> set[str]:
    found: set[str] = set()
    if conn.execute(select(suppressions.c.email).limit(1)).first() is None:
        return found
    for chunk in _chunks(emails):
        found.update(conn.scalars(select(suppressions.c.email).where(suppressions.c.email.in_(chunk))))
    return found


def run_import(
    engine: Engine,
    book_id: int,
    items: Iterable[ContactRow | tuple[int, str]],
    *,
    release: str,
    idempotency_key: str | None,
    on_suppressed: SuppressedPolicy,
) -> tuple[dict[str, Any], bool]:
    """Import the parsed rows; return (result, replayed)."""
    rows: list[ContactRow] = []
    rejections: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, ContactRow):
            rows.append(item)
        else:
            rejections.append({"line": item[0], "reason": item[1]})
    import_id = uuid.uuid4().hex
    try:
        with write_transaction(engine) as conn:
            if idempotency_key:
                previous = find_import(conn, book_id, idempotency_key)
                if previous is not None:
                    return previous, True
            counts = _write_contacts(conn, engine, book_id, rows, on_suppressed)
            result = {
                "id": import_id,
                "address_book_id": book_id,
                "status": "completed",
                "release": release,
                **counts,
                "rejected": len(rejections),
                "rejections": rejections[:MAX_REJECTIONS_KEPT],
            }
            conn.execute(
                imports.insert().values(
                    id=import_id,
                    address_book_id=book_id,
                    idempotency_key=idempotency_key,
                    release=release,
                    status="completed",
                    result=jsonable(result),
                    created_at=datetime.now(UTC),
                )
            )
    except IntegrityError:
        if idempotency_key:
            with engine.connect() as conn:
                previous = find_import(conn, book_id, idempotency_key)
            if previous is not None:
                return previous, True
        raise Conflict(
            "another import changed the same contacts at the same time; retry", code="concurrent_import"
        ) from None
    return result, False


def _write_contacts(
    conn: Connection, engine: Engine, book_id: int, rows: list[ContactRow], on_suppressed: SuppressedPolicy
) -> dict[str, int]:
    emails = [r.email for r in rows]
    existing = existing_contacts(conn, book_id, emails)
    suppressed = suppressed_emails(conn, emails)
    now = datetime.now(UTC)
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    skipped = refreshed = 0
    for row in rows:
        current = existing.get(row.email)
        if row.email in suppressed:
            change = on_suppressed(row, current)
            if change is None or current is None:
                skipped += 1
                continue
            refreshed += 1
        elif current is None:
            inserts.append(
                (book_id, row.email, row.first_name or None, row.last_name or None, jsonable(row.data), now, now)
            )
            continue
        else:
            change = merge(row, current)
        updates.append((change["first_name"], change["last_name"], change["data"], now, current["id"]))
    p = placeholder(engine)
    if inserts:
        conn.exec_driver_sql(
            "INSERT INTO contacts (address_book_id, email, first_name, last_name, data, created_at, updated_at)"
            f" VALUES ({', '.join([p] * 7)})",
            inserts,
        )
    if updates:
        conn.exec_driver_sql(
            f"UPDATE contacts SET first_name = {p}, last_name = {p}, data = {p}, updated_at = {p} WHERE id = {p}",
            updates,
        )
    return {
        "created": len(inserts),
        "updated": len(updates) - refreshed,
        "suppressed_skipped": skipped,
        "suppressed_updated": refreshed,
    }


def merge(row: ContactRow, current: dict[str, Any]) -> dict[str, Any]:
    """An import fills in what it has: empty cells leave the stored value as it was."""
    data = json.loads(current["data"] or "{}")
    data.update({k: v for k, v in row.data.items() if v})
    return {
        "first_name": row.first_name or current["first_name"],
        "last_name": row.last_name or current["last_name"],
        "data": jsonable(data),
    }
