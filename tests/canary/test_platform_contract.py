"""What the controller relies on from any platform, run against both: the local platform (real
processes on 127.0.0.1) and the Kubernetes platform (against the in-memory API server of
``fake_cluster``, a fake at our own wrapper boundary: no API server can run here).  The same calls,
in the order the controller makes them, must leave the same releases running on the same tracks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from canary.platforms import make_platform
from canary.platforms.base import REASON_CHARS, NotReady, Platform
from canary.platforms.kubernetes import KubernetesPlatform
from core.settings import Settings
from tests.canary.fake_cluster import FakeCluster

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def platform_of(kind: str, tmp_path: Path) -> AsyncIterator[Platform]:
    if kind == "local":
        p = make_platform(Settings(state_dir=str(tmp_path), admin_token="t"), "http://127.0.0.1:9")
    else:
        p = KubernetesPlatform(FakeCluster.from_manifests("importer"), retry_pause_s=0.001)
    try:
        yield p
    finally:
        await p.close()


async def ready(p: Platform, release: str, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await p.healthy("importer", release):
            return True
        await asyncio.sleep(0.1)
    return False


async def running(p: Platform) -> set[tuple[str, str, str]]:
    return {(i.service, i.release, i.track) for i in await p.running()}


@pytest.mark.parametrize("kind", ["local", "kubernetes"])
async def test_a_canary_runs_beside_stable_and_stops_on_rollback(kind, tmp_path):
    async with platform_of(kind, tmp_path) as p:
        stable = await p.start("importer", "1.0", "stable")
        canary = await p.start("importer", "1.1", "canary")
        assert await ready(p, "1.0") and await ready(p, "1.1")
        assert await running(p) == {("importer", "1.0", "stable"), ("importer", "1.1", "canary")}
        assert stable.url != canary.url
        again = await p.start("importer", "1.1", "canary")  # applying the same state again changes nothing
        assert again.url == canary.url and await p.healthy("importer", "1.1")
        await p.stop("importer", "1.1")  # rolled back (the controller moved the weight to 0 first)
        assert not await p.healthy("importer", "1.1")
        assert await running(p) == {("importer", "1.0", "stable")}
        assert "1.1" in (await p.not_ready("importer", "1.1")).reason


@pytest.mark.parametrize("kind", ["local", "kubernetes"])
async def test_a_promotion_leaves_stable_on_the_new_release_and_nothing_else(kind, tmp_path):
    async with platform_of(kind, tmp_path) as p:
        await p.start("importer", "1.0", "stable")
        await p.start("importer", "1.2", "canary")
        assert await ready(p, "1.2")
        # promoting, then watching: stable serves the new release (the old one kept warm if it can be)
        await p.start("importer", "1.2", "stable")
        if p.warm_old_release:
            await p.start("importer", "1.0", "stable")
        assert await ready(p, "1.2")
        # succeeded: the old release stops, and the canary's own copy retires
        await p.stop("importer", "1.0")
        await p.retire_canary("importer")
        assert await running(p) == {("importer", "1.2", "stable")}
        assert await p.healthy("importer", "1.2")


@pytest.mark.parametrize("kind", ["local", "kubernetes"])
async def test_a_restarted_controller_finds_what_runs_and_starting_it_again_changes_nothing(kind, tmp_path):
    """The controller dies without stopping anything (a crash is not a stop); the platform the next
    one builds, asked for the same state again, keeps the same releases on the same tracks and URLs
    (the local platform adopts the very processes instead of starting new ones)."""
    cluster = FakeCluster.from_manifests("importer")

    def build() -> Platform:
        if kind == "local":
            return make_platform(Settings(state_dir=str(tmp_path), admin_token="t"), "http://127.0.0.1:9")
        return KubernetesPlatform(cluster, retry_pause_s=0.001)

    first = build()
    stable = await first.start("importer", "1.0", "stable")
    canary = await first.start("importer", "1.2", "canary")
    assert await ready(first, "1.0") and await ready(first, "1.2")
    if kind == "local":
        first._supervisor.cancel()  # type: ignore[attr-defined]  # it dies: no close, nothing stopped
    second = build()
    try:
        assert (await second.start("importer", "1.0", "stable")).url == stable.url
        assert (await second.start("importer", "1.2", "canary")).url == canary.url
        assert await running(second) == {("importer", "1.0", "stable"), ("importer", "1.2", "canary")}
        assert await second.healthy("importer", "1.0") and await second.healthy("importer", "1.2")
        if kind == "local":
            adopted = {(i.release, i.url) for i in second.adopted}  # type: ignore[attr-defined]
            assert adopted == {("1.0", stable.url), ("1.2", canary.url)}
    finally:
        await second.close()


async def test_what_a_platform_says_of_a_release_not_ready_is_one_bounded_line_its_end_kept():
    frames = "".join(f'  File "app.py", line {n}, in load\n    step({n})\n' for n in range(200))
    said = NotReady(
        f"importer 1.1: process exited with code 1: Traceback (most recent call last):\n{frames}"
        "ModuleNotFoundError: No module named 'pillow'"
    )
    assert "\n" not in said.reason and len(said.reason) <= REASON_CHARS + len(" ... ")
    assert said.reason.startswith("importer 1.1: process exited with code 1: Traceback")
    assert said.reason.endswith("ModuleNotFoundError: No module named 'pillow'")  # what went wrong, kept
    assert NotReady(" ready path /readyz\n answered  503 ").reason == "ready path /readyz answered 503"
