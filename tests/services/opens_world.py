"""The open tracker under test: its settings (a database URL and a state directory per test, the
admin token), minting send tokens through its API and processing every pending event.  Used by
test_opens, test_opens_request_limits and test_opens_queue."""

from __future__ import annotations

from pathlib import Path

from core.db import make_engine
from core.settings import Settings
from services.opens.processing import process_batch
from services.opens.releases import HANDLERS

ADMIN = {"Authorization": "Bearer admin-secret"}


def settings(db_url: str, tmp_path: Path, release: str = "1.0", **kw: object) -> Settings:
    return Settings(
        db_url=db_url,
        state_dir=str(tmp_path),
        admin_token="admin-secret",
        release=release,
        **kw,  # type: ignore[arg-type]
    )


async def mint(client, sends):
    r = await client.post("/admin/tokens", json={"sends": sends}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return [t["url"] for t in r.json()["tokens"]]


def process_all(db_url: str, release: str = "1.0") -> int:
    engine = make_engine(db_url)
    total = 0
    while n := process_batch(engine, release, HANDLERS[release], limit=50).claimed:
        total += n
    engine.dispose()
    return total
