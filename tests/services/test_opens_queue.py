"""The open-event queue among its consumers: stable's and the canary's processors split it by the
route table, a promoted canary takes it whole, and a rolled-back release's events are handed back
to stable, counted once (test_opens holds the tracker's own contract, opens_world the helpers both use)."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text

from core.db import make_engine
from services.opens.app import create_opens_app
from services.opens.processing import process_batch
from services.opens.processor import create_processor_app
from services.opens.releases import HANDLERS
from tests.conftest import asgi_client
from tests.services.opens_world import ADMIN, mint, process_all, settings
from tests.services.test_opens import BLANK_AGENT_MIX, OUTLOOK, _hits

pytestmark = pytest.mark.anyio


async def test_stable_and_canary_processors_split_the_queue_by_the_route_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'opens.db'}"
    table = tmp_path / "routes.json"
    ups = {"stable": "http://127.0.0.1:9", "canary": "http://127.0.0.1:10"}
    table.write_text(json.dumps({"version": 1, "services": {"opens": {"upstreams": ups, "weight": 30}}}))
    common = {"route_table": str(table)}
    async with asgi_client(create_opens_app(settings(url, tmp_path))) as c:
        urls = await mint(c, [{"campaign_id": 7, "contact_id": k, "send_id": k} for k in range(300)])
        for u in urls:
            await c.get(u, headers={"User-Agent": OUTLOOK})
        stable = create_processor_app(settings(url, tmp_path, "1.0", track="stable", **common))
        canary = create_processor_app(settings(url, tmp_path, "1.2", track="canary", **common))
        async with asgi_client(stable), asgi_client(canary):
            for _ in range(200):
                stats = (await c.get("/stats")).json()
                if stats["events_pending"] == 0:
                    break
                await asyncio.sleep(0.05)
    by_release = stats["events_processed_by_release"]
    assert sum(by_release.values()) == 300 and 0.2 < by_release["1.2"] / 300 < 0.4
    engine = make_engine(url)
    with engine.connect() as conn:
        owners = conn.execute(text("SELECT processed_by, MIN(bucket), MAX(bucket) FROM raw_events GROUP BY 1")).all()
    engine.dispose()
    assert {r[0]: (r[1] >= 3000, r[2] < 3000) for r in owners} == {"1.0": (True, False), "1.2": (False, True)}


def test_queue_share_ranges_and_an_unreadable_table(tmp_path):
    from core.queue_share import QueueShare, bucket_range

    assert bucket_range(5, "canary") == (0, 500) and bucket_range(5, "stable") == (500, 10_000)
    assert bucket_range(0.25, "canary") == (0, 25)
    share = QueueShare(str(tmp_path / "missing.yaml"), "opens", "canary")
    assert share.current() == (0, 0)  # never read: the canary takes nothing, stable everything


def test_a_promoted_canary_consumer_takes_the_whole_queue_and_the_old_release_nothing(tmp_path):
    # found by the replay: the processor started as the canary kept taking only the canary share
    # (none) after its promotion, and events piled up with nobody processing them
    from core.queue_share import QueueShare
    from core.routes import parse_table

    ups = {"stable": "http://127.0.0.1:9", "canary": "http://127.0.0.1:10"}
    route = {"upstreams": ups, "weight": 25, "releases": {"stable": "1.0", "canary": "1.2"}}
    new = QueueShare("", "opens", "canary", release="1.2")
    old = QueueShare("", "opens", "stable", release="1.0")
    for share in (new, old):
        share.apply(parse_table({"version": 1, "services": {"opens": route}}))
    assert (new.current(), old.current()) == ((0, 2500), (2500, 10_000))
    promoted = {"upstreams": {"stable": ups["canary"]}, "weight": 0, "releases": {"stable": "1.2"}}
    for share in (new, old):
        share.apply(parse_table({"version": 2, "services": {"opens": promoted}}))
    assert (new.current(), old.current()) == ((0, 10_000), (0, 0))
    assert new.applied_version == old.applied_version == 2


async def test_events_of_a_rolled_back_release_are_handed_back_and_nothing_stays_lost(db_url, tmp_path):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path, "1.0"))) as c:
        await _hits(c, BLANK_AGENT_MIX)
        process_all(db_url, "1.1")  # the faulty canary processed (and lost) some
        assert (await c.get("/stats")).json()["unaccounted"] == 4
        assert (await c.post("/admin/reprocess", json={"release": "1.1"})).status_code == 401
        r = await c.post("/admin/reprocess", json={"release": "1.1"}, headers=ADMIN)
        assert r.json() == {"release": "1.1", "events_handed_back": len(BLANK_AGENT_MIX)}
        engine = make_engine(db_url)  # stable does them again: idempotent, and nothing is lost now
        again_done = process_batch(engine, "1.0", HANDLERS["1.0"], limit=1000)
        engine.dispose()
        # counted as the database has them: the 4 that 1.1 lost, not again the 12 it accounted for
        assert (again_done.claimed, again_done.accounted_before) == (len(BLANK_AGENT_MIX), 12)
        assert (again_done.acknowledged, again_done.recorded, sum(again_done.filtered.values())) == (4, 4, 0)
        stats = (await c.get("/stats")).json()
        assert (stats["unaccounted"], stats["opens_recorded"]) == (0, 14)
        assert (await c.get("/campaigns/6/opens")).json()["total"] == 14  # each open counted once
        again = await c.post("/admin/reprocess", json={"release": "1.1"}, headers=ADMIN)
        assert again.json()["events_handed_back"] == 0
        own = await c.post("/admin/reprocess", json={"release": "1.0"}, headers=ADMIN)  # the serving release
        assert own.status_code == 409 and own.json()["error"]["code"] == "own_release", own.text
