"""The resizer's contract, with real images made by Pillow, on real SQLite and PostgreSQL."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from canary.traffic import images
from core.settings import Settings
from services.resizer.app import create_resizer_app
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio


def app_for(db_url: str, **kw: object):
    return create_resizer_app(Settings(db_url=db_url, **kw))  # type: ignore[arg-type]


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


async def test_resize_keeps_aspect_and_sets_cache_headers(db_url):
    async with asgi_client(app_for(db_url)) as c:
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
        assert 'resizer_variants_total{cache="miss",release="1.0",service="resizer"} 2.0' in metrics
        assert 'resizer_variants_total{cache="hit",release="1.0",service="resizer"} 1.0' in metrics


async def test_exif_orientation_is_applied(db_url):
    async with asgi_client(app_for(db_url)) as c:
        image_id = await upload(c, images.exif_rotated_jpeg(600, 400, orientation=6))
        info = (await c.get(f"/images/{image_id}/info")).json()
        assert (info["width"], info["height"]) == (600, 400)
        im = decode((await c.get(f"/images/{image_id}", params={"w": 300})).content)
        assert im.size == (300, 200)
        assert near(im.getpixel((10, 10)), images.RED) and near(im.getpixel((290, 10)), images.GREEN)


async def test_cover_crops_to_the_exact_box(db_url):
    async with asgi_client(app_for(db_url)) as c:
        image_id = await upload(c, images.jpeg(800, 400))
        im = decode((await c.get(f"/images/{image_id}", params={"w": 200, "h": 200, "fit": "cover"})).content)
        assert im.size == (200, 200)
        contain = decode((await c.get(f"/images/{image_id}", params={"w": 200, "h": 200})).content)
        assert contain.size == (200, 100)


async def test_cmyk_palette_alpha_gif_webp_and_progressive_are_converted(db_url):
    async with asgi_client(app_for(db_url)) as c:
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
async def test_bad_uploads_are_refused_with_a_reason(db_url, make, status, code):
    async with asgi_client(app_for(db_url)) as c:
        r = await c.post("/images", content=make())
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code


async def test_bmp_is_refused_and_size_limits_hold(db_url):
    bmp = io.BytesIO()
    Image.new("RGB", (10, 10)).save(bmp, "BMP")
    async with asgi_client(app_for(db_url, image_max_bytes=50_000)) as c:
        r = await c.post("/images", content=bmp.getvalue())
        assert r.status_code == 415 and "BMP" in r.json()["error"]["message"]
        assert (await c.post("/images", content=b"\0" * 60_000)).status_code == 413
        image_id = await upload(c, images.jpeg(100, 100))
        for params in ({"w": 0}, {"w": 99999}, {"w": "abc"}, {"fit": "stretch"}, {"format": "tiff"}, {"q": 100}):
            assert (await c.get(f"/images/{image_id}", params=params)).status_code == 400
        assert (await c.get("/images/unknown", params={"w": 10})).status_code == 404
        small = decode((await c.get(f"/images/{image_id}", params={"w": 1000})).content)
        assert small.size == (100, 100)  # never enlarged
