"""Rows/s for a 100,000-row CSV imported into SQLite through the HTTP endpoint.

Reference, same run, same machine: a bare ``sqlite3.executemany`` of the same rows into the same
table (no HTTP, no parsing, no validation).  ``ratio`` = endpoint rows/s / reference rows/s.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.common import best_of, report, service_process
from core.db import create_schema, make_engine
from services.importer.schema import metadata

ROWS = 100_000
RUNS = 3
MAPPING = json.dumps({"Email": "email", "First": "first_name", "Last": "last_name", "City": "data.city"})


def make_csv(rows: int) -> bytes:
    lines = ["Email,First,Last,City"]
    lines += [f"user{i}@example.com,First{i},Last{i},City{i % 50}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def reference(tmp: Path, run: int) -> None:
    url = f"sqlite:///{tmp / f'ref-{run}.db'}"
    engine = make_engine(url)
    create_schema(engine, metadata)
    engine.dispose()
    now = datetime.now(UTC)
    rows = [
        (1, f"user{i}@example.com", f"First{i}", f"Last{i}", f'{{"city":"City{i % 50}"}}', now, now)
        for i in range(ROWS)
    ]
    conn = sqlite3.connect(tmp / f"ref-{run}.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executemany(
        "INSERT INTO contacts (address_book_id, email, first_name, last_name, data, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()


def main() -> None:
    payload = make_csv(ROWS)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        counter = iter(range(100))
        ref_s = best_of(RUNS, lambda: reference(tmp, next(counter)))
        svc = service_process("importer", f"sqlite:///{tmp / 'svc.db'}", tmp)
        with svc as url, httpx.Client(base_url=url, timeout=300) as client:
            books = iter(range(1, 100))

            def one_import() -> None:
                r = client.post(
                    f"/address-books/{next(books)}/imports",
                    files={"file": ("c.csv", payload)},
                    data={"mapping": MAPPING},
                )
                r.raise_for_status()
                assert r.json()["created"] == ROWS

            http_s = best_of(RUNS, one_import)

            def re_import() -> None:  # the same rows into a book that has them: every row an update
                r = client.post(
                    "/address-books/1/imports", files={"file": ("c.csv", payload)}, data={"mapping": MAPPING}
                )
                r.raise_for_status()
                assert r.json()["updated"] == ROWS

            update_s = best_of(RUNS, re_import)
    report(
        {
            "name": "importer",
            "rows": ROWS,
            "csv_bytes": len(payload),
            "endpoint_rows_per_s": round(ROWS / http_s),
            "reference_executemany_rows_per_s": round(ROWS / ref_s),
            "ratio": round(ref_s / http_s, 3),
            "update_rows_per_s": round(ROWS / update_s),
            "update_ratio": round(ref_s / update_s, 3),
            "goal_ratio": 0.5,
        }
    )


if __name__ == "__main__":
    main()
