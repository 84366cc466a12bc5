"""What the open tracker takes and refuses at its edges: ids no column holds, request bodies that
JSON or the ids refuse, the mint endpoint's stated 2 MiB beside the other endpoints' small limits,
and a release PostgreSQL cannot hold; each a clear 4xx, never a 500.  And the client addresses in
``X-Forwarded-For`` it does not record (only the router's own entry is vouched for).  The tracker's contract is in
test_opens; its helpers in tests.services.opens_world."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from core.db import make_engine
from core.settings import Settings
from services.importer.app import create_importer_app
from services.opens import tokens
from services.opens.app import create_opens_app
from services.opens.schema import raw_events
from tests.conftest import asgi_client
from tests.services.opens_world import ADMIN, mint, settings

pytestmark = pytest.mark.anyio


HUGE = "9" * 25  # past BIGINT: SQLite's driver raised OverflowError (a 500)


MINT_MAX_BYTES = 2 << 20  # what mint_tokens states it reads


@pytest.mark.parametrize("campaign", [HUGE, "9" * 5000, str(tokens.MAX_ID + 1)])
async def test_a_campaign_id_no_column_holds_is_a_404(db_url, tmp_path, campaign):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path))) as c:
        r = await c.get(f"/campaigns/{campaign}/opens")
        assert r.status_code == 404, r.text
        assert "ids are integers" in r.json()["error"]["message"]
        assert len(r.json()["error"]["message"]) < 200
        largest = await c.get(f"/campaigns/{tokens.MAX_ID}/opens")
        assert largest.status_code == 200 and largest.json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"sends": Infinity}', 400),
        (b'{"sends": [{"campaign_id": NaN, "contact_id": 1, "send_id": 1}]}', 400),
        (b'{"sends": [{"campaign_id": ' + b"9" * 5000 + b', "contact_id": 1, "send_id": 1}]}', 400),
        (b'{"sends": ' + b"[" * 4000 + b"]" * 4000 + b"}", 400),
        (b'{"sends": [{"campaign_id": 1e400, "contact_id": 1, "send_id": 1}]}', 400),  # past a float: parse_json
        (b'{"sends": [{"campaign_id": "9999999999999999999999", "contact_id": 1, "send_id": 1}]}', 422),
        (b'{"sends": [{"campaign_id": "\xc2\xb2", "contact_id": 1, "send_id": 1}]}', 422),
        (b'{"sends": [{"campaign_id": 1.5, "contact_id": 1, "send_id": 1}]}', 422),  # was silently 1
        (b'{"sends": [{"campaign_id": true, "contact_id": 1, "send_id": 1}]}', 422),
        (b'{"sends": [7]}', 422),
    ],
)
async def test_mint_bodies_that_json_or_the_ids_refuse_are_a_clear_4xx(db_url, tmp_path, body, status):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path))) as c:
        r = await c.post("/admin/tokens", content=body, headers=ADMIN)
        assert r.status_code == status, r.text
        assert "sends" in r.json()["error"]["message"]
        # ids given as digits (in JSON numbers or strings) are still minted
        ok = await c.post(
            "/admin/tokens", json={"sends": [{"campaign_id": "5", "contact_id": 0, "send_id": 7}]}, headers=ADMIN
        )
        assert ok.status_code == 200 and ok.json()["tokens"][0]["url"].startswith("/o/5.0.7.")


@pytest.mark.parametrize("body", [b"[" * 4000, b'{"release": NaN}', b"Infinity"])
async def test_reprocess_bodies_json_refuses_are_a_400(db_url, tmp_path, body):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path))) as c:
        r = await c.post("/admin/reprocess", content=body, headers=ADMIN)
        assert r.status_code == 400, r.text
        assert "release" in r.json()["error"]["message"]


async def test_mint_takes_its_stated_2_mib_of_sends_past_the_apps_1_mib_default(db_url, tmp_path):
    big = tokens.MAX_ID
    sends = [{"campaign_id": big, "contact_id": big - k, "send_id": big - k, "list": "spring"} for k in range(10_000)]
    body = json.dumps({"sends": sends}).encode()
    assert Settings().max_body_bytes < len(body) < MINT_MAX_BYTES
    async with asgi_client(create_opens_app(settings(db_url, tmp_path))) as c:
        r = await c.post("/admin/tokens", content=body, headers=ADMIN)
        assert r.status_code == 200, r.text[:300]
        minted = r.json()["tokens"]
        assert len(minted) == 10_000 and minted[-1]["list"] == "spring"
        assert tokens.verify(tokens.load_or_create_secret("", str(tmp_path)), minted[-1]["token"]) == tokens.Send(
            big, big - 9_999, big - 9_999
        )
        too_big = await c.post("/admin/tokens", content=body + b" " * MINT_MAX_BYTES, headers=ADMIN)
        assert too_big.status_code == 413
        assert f"over {MINT_MAX_BYTES} bytes" in too_big.json()["error"]["message"]
        # the other endpoints keep their own small limits
        assert (await c.post("/admin/reprocess", content=b" " * 5000, headers=ADMIN)).status_code == 413


async def test_a_release_with_nul_which_postgresql_cannot_hold_is_a_422(db_url, tmp_path):
    async with asgi_client(create_opens_app(settings(db_url, tmp_path))) as c:
        r = await c.post("/admin/reprocess", json={"release": "1.1\x00"}, headers=ADMIN)
        assert r.status_code == 422, r.text
        assert "release" in r.json()["error"]["message"]


async def test_the_recorded_address_is_the_one_the_router_appended_not_the_clients_words(db_url, tmp_path):
    """The router appends the address it saw to ``X-Forwarded-For``; what came before is the client's."""
    async with asgi_client(create_opens_app(settings(db_url, tmp_path))) as c:
        (url,) = await mint(c, [{"campaign_id": 3, "contact_id": 1, "send_id": 1}])
        forged = {"X-Forwarded-For": "6.6.6.6, 7.7.7.7,10.0.0.7"}
        assert (await c.get(url, headers=forged)).status_code == 200
        assert (await c.get(url)).status_code == 200  # no proxy: the peer's address
    engine = make_engine(db_url)
    with engine.connect() as conn:
        seen = [row.client_ip for row in conn.execute(select(raw_events.c.client_ip).order_by(raw_events.c.id))]
    engine.dispose()
    assert seen == ["10.0.0.7", "127.0.0.1"]


async def test_a_pixel_answered_is_synced_to_disk_the_other_services_only_written(tmp_path):
    """An answered open must survive a power loss (no mail client sends the pixel again): the
    opens app's SQLite syncs its WAL on every (group) commit; a service whose callers retry is only
    written to the OS on commit (``synchronous``: 2 FULL, 1 NORMAL)."""

    def synchronous(app) -> int:
        with app.state.engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA synchronous").scalar())

    opens = create_opens_app(settings(f"sqlite:///{tmp_path / 'opens.db'}", tmp_path))
    async with asgi_client(opens) as c:
        (url,) = await mint(c, [{"campaign_id": 4, "contact_id": 1, "send_id": 1}])
        assert (await c.get(url)).status_code == 200
        assert synchronous(opens) == 2
    importer = create_importer_app(Settings(db_url=f"sqlite:///{tmp_path / 'importer.db'}", state_dir=str(tmp_path)))
    async with asgi_client(importer):
        assert synchronous(importer) == 1
