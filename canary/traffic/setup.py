"""Before traffic: what the customers already have (contacts, suppressions, images, sent emails)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from PIL import Image

from canary.traffic import contacts, images


@dataclass(frozen=True)
class LibraryImage:
    id: str
    width: int  # as it must be shown: after EXIF orientation
    height: int
    quadrants: bool  # top-left is red when shown the right way up


@dataclass
class Prepared:
    tokens: list[str] = field(default_factory=list)
    images: list[LibraryImage] = field(default_factory=list)


IMAGE_MAKERS: tuple[tuple[str, Callable[[], bytes], bool], ...] = (
    ("jpeg-large", lambda: images.jpeg(2400, 1600), True),
    ("exif-rotated-6", lambda: images.exif_rotated_jpeg(1200, 800, 6), True),
    ("exif-rotated-8", lambda: images.exif_rotated_jpeg(900, 600, 8), True),
    ("exif-rotated-3", lambda: images.exif_rotated_jpeg(800, 600, 3), True),
    ("cmyk", lambda: images.cmyk_jpeg(800, 600), False),
    ("palette-transparent", lambda: images.palette_png_with_transparency(600, 400), False),
    ("progressive", lambda: images.jpeg(1600, 1200, progressive=True), True),
    ("webp", lambda: images.webp(900, 600), True),
    ("animated-gif", lambda: images.animated_gif(400, 240), False),
)


async def prepare_importer(client: httpx.AsyncClient, accounts: int, pool: int, suppressed_share: float) -> None:
    for account in range(1, accounts + 1):
        r = await client.post(
            f"/address-books/{account}/imports",
            files={"file": ("pool.csv", contacts.full_pool_csv(account, pool))},
            data={"mapping": contacts.MAPPING},
            headers={"Idempotency-Key": f"load-pool-{account}-{pool}", "X-Account-Id": str(account)},
        )
        r.raise_for_status()
        for index in contacts.suppressed_indexes(pool, suppressed_share):
            email = contacts.pool_email(account, index)
            (await client.put(f"/suppressions/{email}", json={"reason": "unsubscribed"})).raise_for_status()


async def prepare_opens(client: httpx.AsyncClient, accounts: int, pool: int, admin_token: str) -> list[str]:
    sends = [
        {"campaign_id": a, "contact_id": c, "send_id": a * 1_000_000 + c}
        for a in range(1, accounts + 1)
        for c in range(pool)
    ]
    tokens: list[str] = []
    for i in range(0, len(sends), 5000):
        r = await client.post(
            "/admin/tokens", json={"sends": sends[i : i + 5000]}, headers={"Authorization": f"Bearer {admin_token}"}
        )
        if r.status_code == 401:
            raise PermissionError(
                "the opens service refused the admin token: pass its own (or the stack's service token, from "
                "which it is derived: CANARY_SERVICE_TOKEN, or --state-dir where `canary up` keeps service-token)"
            )
        r.raise_for_status()
        tokens.extend(t["url"] for t in r.json()["tokens"])
    return tokens


async def prepare_resizer(client: httpx.AsyncClient) -> list[LibraryImage]:
    library = []
    for _name, make, quadrants in IMAGE_MAKERS:
        data = make()
        r = await client.post("/images", content=data)
        r.raise_for_status()
        body = r.json()
        library.append(LibraryImage(body["id"], body["width"], body["height"], quadrants))
    return library


def image_is_right(body: bytes, expected: LibraryImage) -> bool:
    """Right way up and the right shape: a rotated photo is wrong even when answered 200."""
    try:
        im = Image.open(io.BytesIO(body))
        im.load()
    except Exception:
        return False
    if (im.width >= im.height) != (expected.width >= expected.height):
        return False
    if expected.quadrants:
        r, g, b = im.convert("RGB").getpixel((2, 2))  # type: ignore[misc]
        return bool(r > 150 and g < 100 and b < 100)
    return True
