"""How often the local platform asks a canary's ready path: once a controller tick, also while the
canary is not ready and the tick wants the platform's words for it (a real server on 127.0.0.1,
Python's ``http.server``, whose log counts the requests its ready path gets)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from canary.catalog import load_catalog
from canary.platforms.base import NotReady
from canary.platforms.local import LocalPlatform
from canary.platforms.processes import failure_words, free_port, probe

pytestmark = pytest.mark.anyio

# its ready path is a file of the catalog directory: 200 while it exists, else 404
COUNTED = """apiVersion: releasewarden/v1
kind: Service
name: counted
stable: "1"
releases: ["1"]
local:
  command: [python, -m, http.server, "{port}", --bind, 127.0.0.1, --directory, "{catalog_dir}"]
  health_path: /
  ready_path: /ready
  ready_timeout_s: 30
"""


async def tick(platform: LocalPlatform) -> NotReady | None:
    """What a controller tick asks of the platform about a pending canary: whether it is ready
    (``Controller._observe``), and, when it is not, why (``Observer.observe``)."""
    if await platform.healthy("counted", "1"):
        return None
    return await platform.not_ready("counted", "1")


async def ticked_until(platform: LocalPlatform, done, seconds: float = 30) -> NotReady | None:
    deadline = time.monotonic() + seconds
    while True:
        said = await tick(platform)
        if done(said):
            return said
        assert time.monotonic() < deadline, f"never done, last said {said}"
        await asyncio.sleep(0.05)


async def test_a_tick_asks_a_canary_that_is_not_ready_once_and_says_what_it_answered(tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "counted.yaml").write_text(COUNTED)
    (catalog / "ready").touch()
    platform = LocalPlatform(tmp_path / "state", load_catalog([catalog]))
    try:
        await platform.start("counted", "1", "canary")
        log = platform.entries[("counted", "1")].proc.log_path

        def asked() -> int:  # http.server logs a request before it answers it
            return log.read_text().count('"GET /ready ')

        (catalog / "ready").unlink()  # it answered ready at its start, and stops answering so
        for _ in range(4):  # the tick it stops answering too
            before = asked()
            said = await tick(platform)
            assert asked() == before + 1  # the words are those of the probe that found it not ready
            assert said is not None and said.reason.startswith("counted 1: ready path /ready answered 404: ")
            assert (said.waited_s, said.deadline_s) == (None, None)  # its start is over: no deadline of ours

        (catalog / "ready").touch()
        assert await ticked_until(platform, lambda said: said is None) is None
        before = asked()
        said = await platform.not_ready("counted", "1")  # what it heard last: it answered 200
        assert said.reason.startswith("counted 1: ready now (log ") and asked() == before
        for _ in range(3):
            before = asked()
            assert await tick(platform) is None and asked() == before + 1
    finally:
        await platform.close()


async def test_the_kept_alive_ask_says_nothing_listens_as_a_probe_does():
    # an async client's refusal reads "all connection attempts failed": the words say what it was
    port = free_port()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.get(f"http://127.0.0.1:{port}/readyz")
    assert failure_words(f"http://127.0.0.1:{port}/readyz", refused.value, 2.0) == f"connection refused on port {port}"
    assert probe(f"http://127.0.0.1:{port}/readyz") == f"connection refused on port {port}"
