"""The local platform with real processes on 127.0.0.1: start, health, supervision, stop."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from canary.platforms.local import LocalPlatform

pytestmark = pytest.mark.anyio


async def test_releases_run_side_by_side_are_restarted_and_stopped(tmp_path):
    platform = LocalPlatform(tmp_path, {"resizer": f"sqlite:///{tmp_path / 'images.db'}"})
    try:
        stable = await platform.start("resizer", "1.0", "stable")
        canary = await platform.start("resizer", "2.0", "canary")
        assert stable.url != canary.url
        assert httpx.get(f"{canary.url}/healthz").json()["release"] == "2.0"
        assert await platform.start("resizer", "2.0", "canary") == canary  # idempotent: nothing new
        assert await platform.healthy("resizer", "2.0")
        entry = platform.entries[("resizer", "2.0")]
        os.kill(entry.proc.popen.pid, signal.SIGKILL)  # the release dies on its own
        for _ in range(100):
            await asyncio.sleep(0.1)
            if platform.entries[("resizer", "2.0")].restarts == 1 and await platform.healthy("resizer", "2.0"):
                break
        running = {i.release: i for i in await platform.running()}
        assert running["2.0"].restarts == 1 and running["2.0"].url == canary.url  # same port after restart
        assert (tmp_path / "logs").is_dir()
        await platform.stop("resizer", "2.0")
        assert not await platform.healthy("resizer", "2.0")
        assert [i.release for i in await platform.running()] == ["1.0"]
    finally:
        await platform.close()
    assert await platform.running() == []
