"""Images of extreme proportions get a variant or a clear 4xx from every release, never a 500.

Found by an outside audit: a thin strip (2000x4, a divider or banner) asked at ``w=100`` is 100x1 in
1.0, but 2.0 and 2.1 sized it with ``ImageOps.contain``, which rounded the height to 0 px: the
encoder refused the empty image (a ``ValueError``, or for WebP a ``MemoryError``), a 500.  And an
ordinary image wider than the output format can hold (WebP: 16383 px a side, JPEG in libjpeg: 65500)
was handed to the encoder anyway, a 500 on every release; it is a 422 that says the limit.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.resizer import RELEASES
from tests.conftest import asgi_client
from tests.services.test_resizer import app_for, decode, near, upload

pytestmark = pytest.mark.anyio

BLUE = (0, 128, 255)


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), BLUE).save(buf, "PNG")
    return buf.getvalue()


THIN = [
    ((2000, 4), {"w": 100}, (100, 1)),
    ((2000, 4), {"w": 100, "format": "jpeg"}, (100, 1)),
    ((2000, 4), {"w": 100, "format": "webp"}, (100, 1)),
    ((4, 2000), {"h": 100}, (1, 100)),
    ((2000, 4), {"w": 100, "h": 100}, (100, 1)),
    ((2000, 4), {"w": 50, "h": 50, "fit": "cover"}, (50, 4)),
    ((70000, 10), {"w": 300, "format": "webp"}, (300, 1)),  # WebP said MemoryError for 300x0
    ((70000, 10), {"w": 300, "format": "png"}, (300, 1)),
]


async def test_thin_images_are_at_least_one_pixel_a_side_in_every_release(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        ids = {size: await upload(c, png(*size)) for size in {size for size, _, _ in THIN}}
        for size, params, expected in THIN:
            r = await c.get(f"/images/{ids[size]}", params=params)
            assert r.status_code == 200, (size, params, r.text)
            im = decode(r.content)
            assert im.size == expected, (size, params)
            assert near(im.convert("RGB").getpixel((0, 0)), BLUE), (size, params)


async def test_the_ported_releases_size_thin_and_ordinary_images_as_1_0_does(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    requests = [{"w": 100}, {"h": 3}, {"w": 301}, {"h": 67}, {"w": 7, "h": 900}]
    sizes: dict[str, list[tuple[int, int]]] = {}
    async with asgi_client(app_for(url, "1.0")) as stable:
        ids = [await upload(stable, png(*size)) for size in [(2000, 4), (600, 900), (3000, 2000), (5, 4000)]]
    for release in RELEASES:
        async with asgi_client(app_for(url, release)) as c:
            sizes[release] = []
            for image_id in ids:
                for params in requests:
                    r = await c.get(f"/images/{image_id}", params=params)
                    assert r.status_code == 200, (release, params, r.text)
                    sizes[release].append(decode(r.content).size)
    assert sizes["2.0"] == sizes["1.0"] and sizes["2.1"] == sizes["1.0"]


TOO_LARGE = [
    ((20000, 100), {"format": "webp"}, "webp", 16383),
    ((100, 20000), {"format": "webp"}, "webp", 16383),  # per side, whichever it is
    ((16384, 1), {"format": "webp"}, "webp", 16383),
    ((70000, 10), {"format": "jpeg"}, "jpeg", 65500),  # libjpeg's limit, under the format's 65535
    ((65501, 1), {"format": "jpeg"}, "jpeg", 65500),
]
FITS = [
    ((20000, 100), {"format": "png"}, (20000, 100)),
    ((20000, 100), {"format": "jpeg"}, (20000, 100)),
    ((20000, 100), {"w": 300, "format": "webp"}, (300, 2)),
    ((16383, 1), {"format": "webp"}, (16383, 1)),
    ((65500, 1), {"format": "jpeg"}, (65500, 1)),
    ((70000, 10), {}, (70000, 10)),  # a PNG stays a PNG, which holds it
]


async def test_a_variant_larger_than_its_format_holds_is_a_422_that_says_the_limit(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        sizes = {size for size, *_ in TOO_LARGE + FITS}
        ids = {size: await upload(c, png(*size)) for size in sizes}
        for size, params, output, limit in TOO_LARGE:
            r = await c.get(f"/images/{ids[size]}", params=params)
            assert r.status_code == 422, (size, params, r.text)
            error = r.json()["error"]
            assert error["code"] == "too_large_for_format"
            assert str(limit) in error["message"] and f"{size[0]}x{size[1]}" in error["message"], error
            assert error["detail"] == {"format": output, "max_side": limit, "width": size[0], "height": size[1]}
            assert (await c.head(f"/images/{ids[size]}", params=params)).status_code == 422
        for size, params, expected in FITS:
            r = await c.get(f"/images/{ids[size]}", params=params)
            assert r.status_code == 200, (size, params, r.text)
            assert decode(r.content).size == expected, (size, params)
