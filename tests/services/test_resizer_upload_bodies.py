"""The resizer holds a bounded amount of upload bodies: one that does not fit is refused at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from canary.traffic import images
from core.settings import Settings
from services.resizer.app import create_resizer_app
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio


async def test_an_upload_whose_body_does_not_fit_beside_those_held_is_refused_at_once(tmp_path):
    app = create_resizer_app(Settings(db_url=f"sqlite:///{tmp_path / 'r.db'}"))
    photo = images.jpeg(64, 64)
    release = asyncio.Event()

    async def slow_body():  # a client still sending its photo
        yield photo[:100]
        await release.wait()
        yield photo[100:]

    async with asgi_client(app) as c:
        slots = app.state.decode_slots
        slots.body_budget = len(photo) + 10  # room for one such body
        sized = {"content-length": str(len(photo)), "content-type": "image/jpeg"}
        held = asyncio.create_task(c.post("/images", content=slow_body(), headers=sized))
        deadline = time.monotonic() + 30
        while slots.held_bytes != len(photo):  # it declared its size: that much is reserved
            assert time.monotonic() < deadline, "the first upload was never admitted"
            await asyncio.sleep(0.01)
        refused = await c.post("/images", content=photo)  # while the first still sends: not after it
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2", refused.text
        assert refused.json()["error"]["code"] == "uploads_busy" and "MB of bodies" in refused.text
        assert not held.done()
        metrics = (await c.get("/metrics")).text
        assert f'resizer_upload_body_bytes{{release="1.0",service="resizer"}} {float(len(photo))}' in metrics
        release.set()
        assert (await held).status_code == 201
        assert slots.held_bytes == 0  # given back
        assert (await c.post("/images", content=photo)).status_code == 201  # the retry is taken
        # with nothing held, an upload that declares no size is admitted (at the largest size)
        one = await c.post("/images", content=(chunk async for chunk in _once(photo)))
        assert one.status_code == 201 and slots.held_bytes == 0


async def _once(data: bytes):
    yield data


async def test_a_body_stays_counted_until_it_is_stored(tmp_path):
    app = create_resizer_app(Settings(db_url=f"sqlite:///{tmp_path / 'r.db'}"))
    photo = images.jpeg(64, 64)
    entered, go = threading.Event(), threading.Event()
    async with asgi_client(app) as c:
        slots, store = app.state.decode_slots, app.state.store
        slots.body_budget = len(photo) + 10
        insert = store.insert_original

        def slow_insert(row, data):  # a database that keeps the upload waiting for a connection
            entered.set()
            go.wait(30)
            return insert(row, data)

        store.insert_original = slow_insert
        held = asyncio.create_task(c.post("/images", content=photo))
        deadline = time.monotonic() + 30
        while not entered.is_set():
            assert time.monotonic() < deadline, "the upload never reached its insert"
            await asyncio.sleep(0.01)
        assert slots.held_bytes == len(photo) and slots.decoding == 0  # decoded, not stored: still held
        assert (await c.post("/images", content=photo)).status_code == 503
        go.set()
        assert (await held).status_code == 201 and slots.held_bytes == 0
