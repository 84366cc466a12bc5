"""The resizer's contract, with real images made by Pillow, on real SQLite and PostgreSQL.

Tests taking ``release`` hold for every release; the release-specific tests pin 2.0's two bugs
(sideways photos answered 200; connections kept per worker thread, so concurrency exhausts the
pool and requests fail like a database outage) and show 2.1 fixes both.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time

import pytest
from PIL import Image

from canary.traffic import images
from core.settings import Settings
from services.resizer import RELEASES
from services.resizer.app import create_resizer_app
from services.resizer.decoding import decode_slots
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def app_for(db_url: str, release: str = "1.0", **kw: object):
    return create_resizer_app(Settings(db_url=db_url, release=release, **kw))  # type: ignore[arg-type]


def decode(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im


def near(pixel, colour, tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


async def upload(client, data: bytes) -> str:
    r = await client.post("/images", content=data, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_resize_keeps_aspect_and_sets_cache_headers(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        image_id = await upload(c, images.jpeg(3000, 2000))
        r = await c.get(f"/images/{image_id}", params={"w": 300})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        im = decode(r.content)
        assert im.size == (300, 200)
        assert near(im.getpixel((10, 10)), images.RED) and near(im.getpixel((290, 190)), images.YELLOW)
        assert "immutable" in r.headers["cache-control"]
        again = await c.get(f"/images/{image_id}", params={"w": 300}, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        other = await c.get(f"/images/{image_id}", params={"w": 301})
        assert other.headers["etag"] != r.headers["etag"]
        metrics = (await c.get("/metrics")).text
        assert f'resizer_variants_total{{cache="miss",release="{release}",service="resizer"}} 2.0' in metrics
        assert f'resizer_variants_total{{cache="hit",release="{release}",service="resizer"}} 1.0' in metrics


@pytest.mark.parametrize("release", ["1.0", "2.1"])
async def test_exif_orientation_is_applied(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        image_id = await upload(c, images.exif_rotated_jpeg(600, 400, orientation=6))
        info = (await c.get(f"/images/{image_id}/info")).json()
        assert (info["width"], info["height"]) == (600, 400)
        im = decode((await c.get(f"/images/{image_id}", params={"w": 300})).content)
        assert im.size == (300, 200)
        assert near(im.getpixel((10, 10)), images.RED) and near(im.getpixel((290, 10)), images.GREEN)


async def test_cover_crops_to_the_exact_box(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        image_id = await upload(c, images.jpeg(800, 400))
        im = decode((await c.get(f"/images/{image_id}", params={"w": 200, "h": 200, "fit": "cover"})).content)
        assert im.size == (200, 200)
        contain = decode((await c.get(f"/images/{image_id}", params={"w": 200, "h": 200})).content)
        assert contain.size == (200, 100)


async def test_cmyk_palette_alpha_gif_webp_and_progressive_are_converted(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        cmyk = decode((await c.get(f"/images/{await upload(c, images.cmyk_jpeg())}", params={"w": 200})).content)
        assert cmyk.mode == "RGB" and near(cmyk.getpixel((5, 5)), images.RED, 60)

        png_id = await upload(c, images.palette_png_with_transparency())
        r = await c.get(f"/images/{png_id}", params={"w": 150})
        png = decode(r.content)
        assert r.headers["content-type"] == "image/png" and png.mode == "RGBA"
        assert png.getpixel((10, 10))[3] == 255 and png.getpixel((140, 10))[3] == 0
        flat = decode((await c.get(f"/images/{png_id}", params={"w": 150, "format": "jpeg"})).content)
        assert flat.mode == "RGB" and near(flat.getpixel((140, 10)), (255, 255, 255), 10)

        gif = await c.get(f"/images/{await upload(c, images.animated_gif())}", params={"w": 100})
        assert gif.headers["content-type"] == "image/png" and decode(gif.content).size == (100, 60)

        wp = await c.get(f"/images/{await upload(c, images.webp())}", params={"w": 150, "format": "webp"})
        assert wp.headers["content-type"] == "image/webp" and decode(wp.content).size == (150, 100)

        prog = decode(
            (
                await c.get(f"/images/{await upload(c, images.jpeg(1200, 800, progressive=True))}", params={"w": 120})
            ).content
        )
        assert prog.size == (120, 80)


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: b"definitely not an image", 415, "unsupported_media_type"),
        (lambda: images.truncated(images.jpeg(800, 600)), 422, "corrupt_image"),
        (lambda: images.huge_png(8000, 8000), 422, "too_many_pixels"),  # over our 50 MP limit
        (lambda: images.huge_png(20000, 20000), 422, "too_many_pixels"),  # over Pillow's own bomb limit
        (lambda: b"", 422, "empty_body"),
    ],
)
async def test_bad_uploads_are_refused_with_a_reason(db_url, release, make, status, code):
    async with asgi_client(app_for(db_url, release)) as c:
        r = await c.post("/images", content=make())
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code


async def test_bmp_is_refused_and_size_limits_hold(db_url, release):
    bmp = io.BytesIO()
    Image.new("RGB", (10, 10)).save(bmp, "BMP")
    async with asgi_client(app_for(db_url, release, image_max_bytes=50_000)) as c:
        r = await c.post("/images", content=bmp.getvalue())
        assert r.status_code == 415 and "BMP" in r.json()["error"]["message"]
        assert (await c.post("/images", content=b"\0" * 60_000)).status_code == 413
        image_id = await upload(c, images.jpeg(100, 100))
        for params in ({"w": 0}, {"w": 99999}, {"w": "abc"}, {"fit": "stretch"}, {"format": "tiff"}, {"q": 100}):
            assert (await c.get(f"/images/{image_id}", params=params)).status_code == 400
        assert (await c.get("/images/unknown", params={"w": 10})).status_code == 404
        small = decode((await c.get(f"/images/{image_id}", params={"w": 1000})).content)
        assert small.size == (100, 100)  # never enlarged


async def test_release_2_0_answers_sideways_photos_with_200(db_url):
    async with asgi_client(app_for(db_url, "2.0")) as c:
        image_id = await upload(c, images.exif_rotated_jpeg(600, 400, orientation=6))
        r = await c.get(f"/images/{image_id}", params={"w": 300})
        assert r.status_code == 200
        im = decode(r.content)
        assert im.size == (300, 450)  # portrait, though the photo (and /info) is landscape 600x400
        assert not near(im.getpixel((10, 10)), images.RED)


async def _concurrent_renders(c, n: int) -> list:
    image_id = await upload(c, images.jpeg(1600, 1200))
    # distinct widths: every request misses the cache and renders, so requests overlap in threads
    responses = await asyncio.gather(*(c.get(f"/images/{image_id}", params={"w": 100 + i}) for i in range(n)))
    return list(responses)


SMALL_POOL = {"db_pool_size": 2, "db_pool_timeout_s": 0.5}


async def test_release_2_0_runs_the_pool_dry_under_concurrency_like_a_database_outage(tmp_path):
    app = app_for(f"sqlite:///{tmp_path / 'r.db'}", "2.0", **SMALL_POOL)
    async with asgi_client(app) as c:
        assert {r.status_code for r in await _concurrent_renders(c, 2)} == {200}  # fine while traffic is light
        responses = await _concurrent_renders(c, 24)
        failed = [r for r in responses if r.status_code != 200]
        assert failed, "no request failed"
        assert {r.status_code for r in failed} == {503}
        assert {r.json()["error"]["code"] for r in failed} == {"database_unavailable"}
        assert app.state.engine.pool.checkedout() >= 4  # connections held by idle threads
        metrics = (await c.get("/metrics")).text  # and the service says so itself
        assert 'db_pool_connections_checked_out{release="2.0",service="resizer"} 4.0' in metrics


@pytest.mark.parametrize("release", ["1.0", "2.1"])
async def test_connections_are_returned_under_concurrency(tmp_path, release):
    app = app_for(f"sqlite:///{tmp_path / 'r.db'}", release, **SMALL_POOL)
    async with asgi_client(app) as c:
        assert {r.status_code for r in await _concurrent_renders(c, 24)} == {200}
        assert app.state.engine.pool.checkedout() == 0
        metrics = (await c.get("/metrics")).text
        assert f'db_pool_connections_checked_out{{release="{release}",service="resizer"}} 0.0' in metrics


async def test_releases_sharing_a_database_never_answer_with_each_others_cached_variants(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with asgi_client(app_for(url, "1.0")) as stable, asgi_client(app_for(url, "2.0")) as canary:
        image_id = await upload(stable, images.exif_rotated_jpeg(600, 400, orientation=6))
        upright = decode((await stable.get(f"/images/{image_id}", params={"w": 300})).content)
        sideways = decode((await canary.get(f"/images/{image_id}", params={"w": 300})).content)
    assert upright.size == (300, 200) and sideways.size == (300, 450)  # 2.0's own (wrong) rendering


@pytest.mark.parametrize(
    "params",
    [
        {"w": "9" * 5000},  # isdigit() passed, int() refused: a 500
        {"w": "²"},  # isdigit() passed, int() refused: a 500
        {"h": "\u0661\u0662"},  # Arabic-Indic digits: isdigit() passed and int() read 12
        {"q": "9" * 25},
        {"w": "-1"},
        {"w": "1_0"},
    ],
)
async def test_numbers_in_the_query_are_ascii_digits_in_range_or_a_400(db_url, params):
    async with asgi_client(app_for(db_url)) as c:
        image_id = await upload(c, images.jpeg(100, 100))
        r = await c.get(f"/images/{image_id}", params=params)
        assert r.status_code == 400, r.text
        name = next(iter(params))
        assert r.json()["error"]["message"].startswith(f"{name} must be an integer")
        padded = await c.get(f"/images/{image_id}", params={"w": "0050", "q": "080"})
        assert padded.status_code == 200 and decode(padded.content).size == (50, 50)


def rgba_png(width: int, height: int) -> bytes:
    """Small on the wire, large decoded: every pixel of it is 4 bytes in memory."""
    buf = io.BytesIO()
    Image.new("RGBA", (width, height), (10, 20, 30, 255)).save(buf, "PNG")
    return buf.getvalue()


class CountedDecodes:
    """The app's own decode (``app.state.inspect``), counting how many run at once.  Each holds until
    every upload has either reached a decode or is waiting for a slot, so that uploads do overlap."""

    def __init__(self, app, uploads: int) -> None:
        self.app, self.uploads, self.inspect = app, uploads, app.state.inspect
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.go = threading.Event()
        app.state.inspect = self

    def __call__(self, data: bytes, max_pixels: int):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            deadline = time.monotonic() + 30
            while not self.go.is_set():
                if self.active + self.app.state.decode_slots.waiting >= self.uploads:
                    self.go.set()  # all in: from now on every decode runs at once
                assert time.monotonic() < deadline, "the uploads never all arrived"
                self.go.wait(0.01)
            return self.inspect(data, max_pixels)
        finally:
            with self.lock:
                self.active -= 1


async def test_concurrent_big_uploads_all_succeed_and_at_most_the_slots_decode_at_once(tmp_path):
    app = app_for(f"sqlite:///{tmp_path / 'r.db'}")
    big = rgba_png(5000, 5000)  # 25 MP, 100 MB decoded
    async with asgi_client(app) as c:
        slots = app.state.decode_slots.size
        assert slots >= 1
        uploads = 3 * slots + 1
        decodes = CountedDecodes(app, uploads)
        responses = await asyncio.gather(*(c.post("/images", content=big) for _ in range(uploads)))
        # each waits its turn (or, on a machine so slow that it waited DECODE_WAIT_S, is told to retry)
        for r in responses:
            assert r.status_code == 201 or (r.status_code == 503 and r.headers["retry-after"]), r.text
        assert sum(r.status_code == 201 for r in responses) >= slots
        assert decodes.peak == slots  # they overlapped, and no more than the slots decoded at once
        metrics = (await c.get("/metrics")).text
        assert 'resizer_uploads_decoding{release="1.0",service="resizer"} 0.0' in metrics
        assert 'resizer_uploads_waiting{release="1.0",service="resizer"} 0.0' in metrics


def test_decode_slots_come_from_the_pixel_limit():
    cores = os.cpu_count() or 2
    assert decode_slots(Settings()) == min(cores, 2)  # 50 MP of 4 bytes: two in 512 MiB
    assert decode_slots(Settings(image_max_pixels=10**9)) == 1  # never none
    assert decode_slots(Settings(image_max_pixels=1_000_000)) == cores  # never more than the cores


async def test_an_upload_that_waits_too_long_for_a_slot_is_a_503_with_retry_after(tmp_path):
    app = app_for(f"sqlite:///{tmp_path / 'r.db'}")
    async with asgi_client(app) as c:
        slots = app.state.decode_slots
        decodes = CountedDecodes(app, uploads=10**6)  # held until released below
        held = [asyncio.create_task(c.post("/images", content=images.jpeg(64, 64))) for _ in range(slots.size)]
        deadline = time.monotonic() + 30
        while decodes.active < slots.size:
            assert time.monotonic() < deadline, "the first uploads never started decoding"
            await asyncio.sleep(0.01)
        slots.wait_s = 0.05
        refused = await c.post("/images", content=images.jpeg(64, 64))
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["code"] == "uploads_busy"
        decodes.go.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [201] * slots.size
        slots.wait_s = 10.0
        assert (await c.post("/images", content=images.jpeg(64, 64))).status_code == 201  # the retry is taken


async def test_an_image_id_with_nul_which_postgresql_cannot_hold_is_a_404(db_url):
    async with asgi_client(app_for(db_url)) as c:
        for path in ("/images/a%00b", "/images/a%00b/info"):
            r = await c.get(path, params={"w": 10})
            assert r.status_code == 404, r.text
