"""The one route-table source, against a real HTTP server on 127.0.0.1 playing the controller's
``GET /api/routes``: the reader headers of the confirmation contract, the last good table kept while
the source is away, and the table kept on disk for a restarted router."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from canary.router.source import TableHolder
from core.queue_share import QueueShare
from core.serve import serve_in_thread
from core.table_source import MAX_TABLE_BYTES, TableSource

pytestmark = pytest.mark.anyio
UPS = {"stable": "http://127.0.0.1:9", "canary": "http://127.0.0.1:10"}


def table(version: int, weight: float = 0, releases: dict[str, str] | None = None) -> dict[str, Any]:
    route = {"upstreams": UPS, "weight": weight, "releases": releases or {"stable": "1.0", "canary": "1.1"}}
    return {"version": version, "services": {"opens": route}}


@dataclass
class FakeControllerRoutes:
    """A real server: it answers the table it is given (or 503) and remembers who asked with what."""

    answer: dict[str, Any] | None = None
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # reader, version, token

    async def routes(self, request: Request) -> Response:
        h = request.headers
        self.seen.append((h.get("x-table-reader", ""), h.get("x-table-version", ""), h.get("authorization", "")))
        if self.answer is None:
            return JSONResponse({"error": "down"}, status_code=503)
        return JSONResponse(self.answer)


@pytest.fixture
def controller() -> Iterator[tuple[FakeControllerRoutes, str]]:
    fake = FakeControllerRoutes()
    app = Starlette(routes=[Route("/api/routes", fake.routes)])
    with serve_in_thread(app) as url:
        yield fake, f"{url}/api/routes"


async def until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_consumer_confirms_the_version_whose_share_its_loop_picked_up(controller):
    fake, url = controller
    fake.answer = table(3, weight=25)
    share = QueueShare(url, "opens", "canary", token="tok", release="1.1", consumer="opens-processor@1.1")
    share.source.poll_s = 0.05
    await share.start()
    try:
        await until(lambda: share.source.table.version == 3)
        assert share.applied_version == 0 and share.range == (0, 0)  # downloaded, not yet applied
        assert share.current() == (0, 2500)
        await until(lambda: fake.seen[-1][1] == "3")
        assert fake.seen[-1] == ("consumer/opens-processor@1.1", "3", "Bearer tok")
        assert fake.seen[0][1] == "0"  # before any table
    finally:
        await share.stop()


async def test_the_last_good_table_is_kept_while_the_controller_is_away_and_a_restarted_one_counts_from_one(
    controller,
):
    fake, url = controller
    fake.answer = table(7, weight=10)
    source = TableSource(url, poll_s=0.05)
    await source.start()
    try:
        await until(lambda: source.table.version == 7)
        fake.answer = None  # the controller is down: 503s, then a broken body
        await until(lambda: "503" in source.last_error)
        assert source.table.version == 7 and source.table.services["opens"].weight == 10
        fake.answer = table(1, weight=50)  # a restarted controller: a lower version, new content, applied
        await until(lambda: source.table.version == 1)
        assert source.table.services["opens"].weight == 50 and source.last_error == ""
    finally:
        await source.stop()


async def test_a_router_keeps_its_table_on_disk_and_serves_it_at_start_without_the_controller(controller, tmp_path):
    fake, url = controller
    kept = tmp_path / "router-table.json"
    fake.answer = table(4, weight=5)
    first = TableHolder(url, "tok")
    first.configure(address="127.0.0.1:8080", state_file=kept)
    first.poll_s = 0.05
    await first.start()
    try:
        await until(lambda: first.table.version == 4)
        await until(lambda: fake.seen[-1][1] == "4")
    finally:
        await first.stop()
    assert fake.seen[-1][0] == "router/127.0.0.1:8080"
    assert json.loads(kept.read_text())["version"] == 4
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left behind

    fake.answer = None  # the controller is down when the router starts again
    second = TableHolder(url, "tok")
    second.configure(address="127.0.0.1:8080", state_file=kept)
    second.load_file_now()
    assert second.table.version == 4 and set(second.table.services) == {"opens"}
    assert second.status()["kept_in"] == str(kept)


async def test_a_damaged_kept_table_is_reported_and_the_router_starts_empty(tmp_path):
    kept = tmp_path / "router-table.json"
    kept.write_text('{"version": 2, "services": {"opens": {"weight": 5')  # cut short
    holder = TableHolder("http://127.0.0.1:9/api/routes")
    holder.configure(state_file=kept)
    holder.load_file_now()
    assert holder.table.version == 0 and "unreadable" in holder.last_error
    kept.write_text(json.dumps({"version": 2, "services": {"opens": {"upstreams": {"stable": "ftp://x"}}}}))
    holder.load_file_now()
    assert holder.table.version == 0 and "services.opens.upstreams.stable" in holder.last_error


def many_services(version: int, count: int) -> bytes:
    route = {"upstreams": UPS, "weight": 5, "releases": {"stable": "1.0", "canary": "1.1"}}
    return json.dumps({"version": version, "services": {f"svc-{i:05d}": route for i in range(count)}}).encode()


@pytest.fixture
def streaming_controller() -> Iterator[tuple[dict[str, bytes], str]]:
    """A controller whose answer arrives in several writes with pauses between them, as a large
    table does over a real network: no single read finds the whole body buffered."""
    answer = {"body": b""}

    async def routes(request: Request) -> Response:
        body = answer["body"]
        step = max(1, len(body) // 4)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), step):
                yield body[start : start + step]
                await asyncio.sleep(0.03)

        return StreamingResponse(chunks(), media_type="application/json")

    app = Starlette(routes=[Route("/api/routes", routes)])
    with serve_in_thread(app) as url:
        yield answer, f"{url}/api/routes"


async def test_a_large_table_sent_in_several_writes_is_applied_and_one_over_the_cap_is_refused(
    streaming_controller,
):
    answer, url = streaming_controller
    answer["body"] = large = many_services(5, 700)
    assert 90_000 < len(large) < MAX_TABLE_BYTES
    source = TableSource(url, poll_s=0.05)
    await source.start()
    try:
        await until(lambda: source.table.version == 5)
        assert len(source.table.services) == 700 and source.last_error == ""
        answer["body"] = too_large = many_services(6, 8000)  # valid JSON, refused for its size alone
        assert len(too_large) > MAX_TABLE_BYTES
        await until(lambda: "larger than" in source.last_error)
        assert source.table.version == 5 and len(source.table.services) == 700
    finally:
        await source.stop()
