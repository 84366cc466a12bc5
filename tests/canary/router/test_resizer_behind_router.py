"""The router in front of real resizer processes on 127.0.0.1, sharing one database.

Mirror mode catches 2.0's orientation bug as differences while consumers get stable's images, with
no difference between stable and its baseline copy; at a live canary weight, consumers driven by
`canary load` see no error while the router's metrics show the canary's failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx

from canary.platforms.processes import start_service, wait_ready
from canary.router.app import create_router, serve_router_in_thread
from canary.traffic import setup
from canary.traffic.load import LoadConfig, run
from core.settings import Settings

TOKEN = "router-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
# A small pool, so that 2.0's connection leak shows within seconds under live traffic.  Not in
# mirror mode: there the test is about the orientation bug, and a mirrored request that overlaps
# the next one would otherwise meet the leak too (a 503, a true but other difference).
SMALL_POOL = {"CANARY_DB_POOL_SIZE": "2", "CANARY_DB_POOL_TIMEOUT_S": "0.5"}


@contextlib.contextmanager
def resizers(tmp_path, *releases: str, env: dict[str, str] | None = None):
    procs = [
        start_service("resizer", r, db_url=f"sqlite:///{tmp_path / 'images.db'}", state_dir=tmp_path, env=env)
        for r in releases
    ]
    try:
        for p in procs:
            wait_ready(p)
        yield [p.url for p in procs]
    finally:
        for p in procs:
            p.stop()


def put_table(router_url: str, route: dict) -> None:
    r = httpx.put(
        f"{router_url}/_router/table",
        content=json.dumps({"version": 1, "services": {"resizer": route}}),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 200, r.text


def test_mirror_catches_the_orientation_bug_with_no_noise_between_stable_copies(tmp_path):
    router = create_router(Settings(admin_token=TOKEN))
    with resizers(tmp_path, "1.0", "1.0", "2.0") as (stable, baseline, canary), serve_router_in_thread(router) as url:
        put_table(
            url,
            {
                "upstreams": {"stable": stable, "baseline": baseline, "canary": canary},
                "releases": {"stable": "1.0", "baseline": "1.0", "canary": "2.0"},
                "weight": 0,
                "mirror": {"share": 1.0},
                "routes": ["/images/{image_id}"],
            },
        )
        with httpx.Client(base_url=f"{url}/resizer", timeout=30) as client:
            library = asyncio.run(setup.prepare_resizer(httpx.AsyncClient(base_url=f"{url}/resizer", timeout=30)))
            rotated = {
                image.id
                for image, (name, _, _) in zip(library, setup.IMAGE_MAKERS, strict=True)
                if name.startswith("exif-rotated")
            }
            for image in library:
                r = client.get(f"/images/{image.id}", params={"w": 300})
                assert r.status_code == 200 and r.headers["x-canary-track"] == "stable"
                assert setup.image_is_right(r.content, image)  # consumers get stable's (right) images
        # the mirror compares after the consumer's answer: three resizes per request, slow on a busy machine
        deadline = time.monotonic() + 60
        while True:
            mirror = httpx.get(f"{url}/_router/stats").json()["mirror"]
            if (mirror and mirror[0]["compared"] >= len(library)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        report = httpx.get(f"{url}/_router/mirror", headers=ADMIN).json()
    assert mirror == [
        {
            "service": "resizer",
            "route": "/images/{image_id}",
            "compared": len(library),
            "different": len(rotated),
            "baseline_compared": len(library),  # stable's answers against its baseline copy's
            "baseline_different": 0,
            "skipped": 0,  # every request chosen was mirrored
        }
    ]
    assert report["noise"] == {}  # stable and its baseline copy never differed
    samples = report["samples"]["resizer"]
    assert {s["request"].split("/")[2].split("?")[0] for s in samples} == rotated
    assert any(
        "image 300x450 != " in d or "pixels differ" in d or "image 300x200 != " in d
        for s in samples
        for d in s["differences"]
    )


def test_live_canary_failures_are_invisible_to_consumers_and_counted_by_the_router(tmp_path):
    router = create_router(Settings(admin_token=TOKEN))
    with resizers(tmp_path, "1.0", "2.0", env=SMALL_POOL) as (stable, canary), serve_router_in_thread(router) as url:
        put_table(
            url,
            {
                "upstreams": {"stable": stable, "canary": canary},
                "releases": {"stable": "1.0", "canary": "2.0"},
                "weight": 10,
                "sticky": {"header": "X-Account-Id"},
                "routes": ["/images/{image_id}"],
            },
        )
        report = run(LoadConfig(resizer=f"{url}/resizer", rate=4, duration=5, mix={"resizer": 1.0}, accounts=100))
        stats = httpx.get(f"{url}/_router/stats").json()["counters"]
    seen = report["services"]["resizer"]
    assert seen["requests"] > 100 and seen["errors"] == {}  # no consumer saw an error
    canary = [row for row in stats if row["track"] == "canary"]
    assert sum(r["errors"] for r in canary) > 0 and sum(r["failovers"] for r in canary) > 0
    assert {r["release"] for r in canary} == {"2.0"}
