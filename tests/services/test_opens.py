"""The open tracker's contract: signed tokens, durable pixel events, processing and reports.

Tests taking ``release`` hold for every release; the release-specific tests pin 1.1's silent loss
(events with a blank user agent acknowledged, never recorded) and 1.2's fix.  What the tracker
refuses at its edges is in test_opens_request_limits; the helpers are in tests.services.opens_world.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

import pytest
from sqlalchemy import text

from core.db import make_engine
from services.opens import RELEASES, tokens
from services.opens.app import PIXEL, create_opens_app, event_stats
from services.opens.processing import process_batch
from services.opens.processor import create_processor_app
from services.opens.releases import HANDLERS
from services.opens.spool import Spool
from services.opens.useragent import classify
from tests.conftest import asgi_client
from tests.file_modes import modes_before_chmod, permissive_umask
from tests.services.opens_world import ADMIN, mint, process_all, settings

pytestmark = pytest.mark.anyio
OUTLOOK = "Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Outlook 16.0"
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize(
    ("ua", "client", "machine", "filtered"),
    [
        (OUTLOOK, "outlook", False, None),
        (IPHONE_MAIL, "apple-mail", False, None),
        (GMAIL, "gmail", True, None),
        ("Mozilla/5.0", "apple-mail", True, None),
        ("Mozilla/5.0 (Windows NT 10.0) Barracuda Sentinel", "security-scanner", True, None),
        ("curl/8.5.0", "automation", True, "automation"),
        ("", "unknown", False, None),
        ("Mozilla/5.0 (Linux; Android 14) SamsungEmail/6.1", "samsung-email", False, None),
    ],
)
def test_user_agent_classification(ua, client, machine, filtered):
    kind = classify(ua)
    assert (kind.client, kind.machine, kind.filtered) == (client, machine, filtered)


def test_tokens_are_signed():
    secret = b"k" * 32
    token = tokens.mint(secret, tokens.Send(1, 2, 3))
    assert tokens.verify(secret, token) == tokens.Send(1, 2, 3)
    assert tokens.verify(b"other" * 8, token) is None
    forged = token.replace("1.2.3", "1.2.4", 1)
    assert tokens.verify(secret, forged) is None
    for junk in ("", "1.2.3", "a.b.c.d", "1.2.3." + "A" * 200, "99999999999999999999.1.1.x"):
        assert tokens.verify(secret, junk) is None


def test_token_secret_file_is_created_0600_even_with_a_permissive_umask(tmp_path, monkeypatch):
    chmodded_from = modes_before_chmod(monkeypatch)
    with permissive_umask():
        secret = tokens.load_or_create_secret("", str(tmp_path))
    path = tmp_path / "opens-token-secret"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert all(mode == 0o600 for mode in chmodded_from), [oct(m) for m in chmodded_from]
    assert secret and path.read_bytes().strip() == secret
    assert tokens.load_or_create_secret("", str(tmp_path)) == secret


def test_a_secret_file_still_being_written_is_waited_for_never_read_as_empty(tmp_path):
    path = tmp_path / "opens-token-secret"
    path.touch(mode=0o600)  # another process has created it and not yet written its secret
    writer = threading.Timer(0.3, path.write_text, args=("secret-of-the-other-process\n",))
    writer.start()
    try:
        started = time.monotonic()
        assert tokens.load_or_create_secret("", str(tmp_path)) == b"secret-of-the-other-process"
        assert time.monotonic() - started < 10
    finally:
        writer.cancel()
        writer.join(timeout=10)


def test_a_secret_file_that_stays_empty_is_a_clear_error_after_a_bounded_wait(tmp_path):
    (tmp_path / "opens-token-secret").touch(mode=0o600)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"opens-token-secret.*empty"):
        tokens.load_or_create_secret("", str(tmp_path), wait=0.3)
    assert 0.3 <= time.monotonic() - started < 5


async def test_pixel_stores_event_and_report_counts_it(db_url, tmp_path, release):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path, release))) as c:
        assert (await c.post("/admin/tokens", json={"sends": [{"campaign_id": 1}]})).status_code == 401
        assert (await c.post("/admin/tokens", json={"sends": []}, headers=ADMIN)).status_code == 422
        urls = await mint(c, [{"campaign_id": 9, "contact_id": k, "send_id": 100 + k} for k in range(3)])
        for url, ua in zip(urls, [OUTLOOK, IPHONE_MAIL, GMAIL], strict=True):
            r = await c.get(url, headers={"User-Agent": ua})
            assert r.status_code == 200 and r.content == PIXEL
            assert r.headers["content-type"] == "image/gif"
            assert "no-store" in r.headers["cache-control"]
        await c.get(urls[0], headers={"User-Agent": OUTLOOK})  # a second open of the same send
        await c.get(urls[0], headers={"User-Agent": "python-requests/2.31"})
        bad = await c.get("/o/9.1.1.forged.gif")
        assert bad.status_code == 200 and bad.content == PIXEL
        assert (await c.get("/stats")).json()["events_stored"] == 5
        assert process_all(db_url, release) == 5
        report = (await c.get("/campaigns/9/opens")).json()
        assert report == {
            "campaign_id": 9,
            "total": 4,
            "unique": 3,
            "machine": 1,
            "filtered": 1,
            "by_client": {"outlook": 2, "apple-mail": 1, "gmail": 1},
        }
        stats = (await c.get("/stats")).json()
        assert (stats["events_pending"], stats["unaccounted"], stats["opens_recorded"]) == (0, 0, 4)
        metrics = (await c.get("/metrics")).text
        assert f'opens_pixel_hits_total{{outcome="bad_token",release="{release}",service="opens"}} 1.0' in metrics
        assert f'opens_pixel_hits_total{{outcome="stored_db",release="{release}",service="opens"}} 5.0' in metrics


async def test_processing_is_idempotent(db_url, tmp_path, release):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path, release))) as c:
        urls = await mint(c, [{"campaign_id": 5, "contact_id": 1, "send_id": 1}])
        for _ in range(4):
            await c.get(urls[0], headers={"User-Agent": OUTLOOK})
        assert process_all(db_url, release) == 4
        engine = make_engine(db_url)
        with engine.begin() as conn:  # as after a rollback: everything must be processed again
            conn.execute(text("UPDATE raw_events SET processed_at = NULL, processed_by = NULL"))
        engine.dispose()
        assert process_all(db_url, release) == 4
        report = (await c.get("/campaigns/5/opens")).json()
        assert report["total"] == 4
        assert (await c.get("/stats")).json()["unaccounted"] == 0


async def test_concurrent_processors_share_the_queue_without_double_work(db_url, tmp_path, release):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path, release))) as c:
        urls = await mint(c, [{"campaign_id": 3, "contact_id": k, "send_id": k} for k in range(200)])
        await asyncio.gather(*(c.get(u, headers={"User-Agent": OUTLOOK}) for u in urls))
        claimed: list[int] = []

        def worker() -> None:
            engine = make_engine(db_url)
            while n := process_batch(engine, release, HANDLERS[release], limit=7).claimed:
                claimed.append(n)
            engine.dispose()

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(claimed) == 200
        assert (await c.get("/campaigns/3/opens")).json()["total"] == 200


async def test_bucket_range_takes_only_its_share(db_url, tmp_path, release):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path, release))) as c:
        urls = await mint(c, [{"campaign_id": 4, "contact_id": k, "send_id": k} for k in range(100)])
        for u in urls:
            await c.get(u, headers={"User-Agent": OUTLOOK})
        engine = make_engine(db_url)
        handler = HANDLERS[release]
        low = process_batch(engine, release, handler, limit=1000, buckets=(0, 5000)).claimed
        high = process_batch(engine, release, handler, limit=1000, buckets=(5000, 10_000)).claimed
        engine.dispose()
        assert low + high == 100 and 20 < low < 80


async def test_pixel_spools_while_database_is_locked_and_drains_after(tmp_path):
    db = tmp_path / "opens.db"
    url = f"sqlite:///{db}"
    app = create_opens_app(settings(url, tmp_path, db_busy_timeout_ms=100))
    async with asgi_client(app) as c:
        urls = await mint(c, [{"campaign_id": 2, "contact_id": k, "send_id": k} for k in range(5)])
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database: ours cannot write
        try:
            for u in urls:
                r = await c.get(u, headers={"User-Agent": OUTLOOK})
                assert r.status_code == 200 and r.content == PIXEL
            assert Spool(tmp_path / "spool").size() == 5
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        for _ in range(50):
            stats = (await c.get("/stats")).json()
            if stats["events_stored"] == 5 and stats["events_spooled"] == 0:
                break
            await asyncio.sleep(0.1)
        assert (stats["events_stored"], stats["events_spooled"]) == (5, 0)
        assert 'outcome="stored_spool"' in (await c.get("/metrics")).text


def test_spool_survives_torn_lines_and_dead_writers(tmp_path):
    spool = Spool(tmp_path)
    spool.append([{"event_id": "a"}, {"event_id": "b"}])
    dead = tmp_path / "events-999999.jsonl"  # a process that died mid-write left this behind
    dead.write_bytes(b'{"event_id": "c"}\n{"event_id": "d", "tor')
    assert os.path.exists(dead)
    drained: list[dict] = []
    assert spool.drain(drained.extend) == 3
    assert sorted(e["event_id"] for e in drained) == ["a", "b", "c"]
    assert spool.size() == 0 and not dead.exists()


async def test_processor_process_app_processes_and_counts(db_url, tmp_path, release):
    s = settings(db_url, tmp_path, release)
    async with asgi_client(create_opens_app(s)) as c:
        urls = await mint(c, [{"campaign_id": 8, "contact_id": k, "send_id": k} for k in range(10)])
        for u in urls:
            await c.get(u, headers={"User-Agent": OUTLOOK})
        await c.get(urls[0], headers={"User-Agent": "curl/8.0"})
        async with asgi_client(create_processor_app(s)) as p:
            for _ in range(100):
                if (await c.get("/stats")).json()["events_pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            metrics = (await p.get("/metrics")).text
        assert f'opens_events_acknowledged_total{{release="{release}",service="opens-processor"}} 11.0' in metrics
        assert f'opens_recorded_total{{release="{release}",service="opens-processor"}} 10.0' in metrics
        assert (
            f'opens_events_filtered_total{{reason="automation",release="{release}",service="opens-processor"}} 1.0'
            in metrics
        )
    engine = make_engine(db_url)
    assert event_stats(engine)["unaccounted"] == 0
    engine.dispose()


BLANK_AGENT_MIX = [OUTLOOK] * 6 + [""] * 3 + [IPHONE_MAIL] * 4 + ["   "] + ["curl/8.0"] * 2


async def _hits(c, agents: list[str]) -> None:
    urls = await mint(c, [{"campaign_id": 6, "contact_id": k, "send_id": k} for k in range(len(agents))])
    for url, ua in zip(urls, agents, strict=True):
        await c.get(url, headers={"User-Agent": ua})  # an empty value, not httpx's own default agent


async def test_release_1_1_acknowledges_blank_agent_events_without_recording_them(db_url, tmp_path):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path, "1.1"))) as c:
        await _hits(c, BLANK_AGENT_MIX)
        assert process_all(db_url, "1.1") == len(BLANK_AGENT_MIX)
        stats = (await c.get("/stats")).json()
        # all acknowledged, nothing pending, no error: and exactly the blank-agent events are gone
        assert stats["events_pending"] == 0 and stats["events_processed_by_release"] == {"1.1": 16}
        assert (stats["opens_recorded"], stats["events_filtered"], stats["unaccounted"]) == (10, 2, 4)
        report = (await c.get("/campaigns/6/opens")).json()
        assert report["by_client"] == {"outlook": 6, "apple-mail": 4}


@pytest.mark.parametrize("release", ["1.0", "1.2"])
async def test_blank_agent_events_are_opens_in_1_0_and_1_2(db_url, tmp_path, release):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path, release))) as c:
        await _hits(c, BLANK_AGENT_MIX)
        process_all(db_url, release)
        stats = (await c.get("/stats")).json()
        assert (stats["opens_recorded"], stats["events_filtered"], stats["unaccounted"]) == (14, 2, 0)
        assert (await c.get("/campaigns/6/opens")).json()["by_client"]["unknown"] == 4


async def test_stable_reprocessing_recovers_what_1_1_lost(db_url, tmp_path):
    """After a rollback, stable re-processes the canary's events: nothing stays lost."""
    async with asgi_client(create_opens_app(settings(db_url, tmp_path, "1.1"))) as c:
        await _hits(c, BLANK_AGENT_MIX)
        process_all(db_url, "1.1")
        engine = make_engine(db_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE raw_events SET processed_at = NULL WHERE processed_by = '1.1'"))
        engine.dispose()
        process_all(db_url, "1.0")
        assert (await c.get("/stats")).json()["unaccounted"] == 0


async def test_release_1_1_loss_shows_in_its_processor_metrics(db_url, tmp_path):
    s = settings(db_url, tmp_path, "1.1")
    async with asgi_client(create_opens_app(s)) as c:
        await _hits(c, BLANK_AGENT_MIX)
        async with asgi_client(create_processor_app(s)) as p:
            for _ in range(100):
                if (await c.get("/stats")).json()["events_pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            metrics = (await p.get("/metrics")).text
    assert 'opens_events_acknowledged_total{release="1.1",service="opens-processor"} 16.0' in metrics
    assert 'opens_recorded_total{release="1.1",service="opens-processor"} 10.0' in metrics
    assert 'opens_events_filtered_total{reason="automation",release="1.1",service="opens-processor"} 2.0' in metrics
