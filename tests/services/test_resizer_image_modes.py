"""Every image the resizer accepts gives a variant or a clear 4xx, in every pixel mode.

Found with image files no one here made: PNGs with a transparent colour (a ``tRNS`` chunk) on a 1-bit
or 16-bit grey image made every release answer 500 (Pillow's ``ValueError`` while converting), and
16-bit grey came out white.  The images are made two ways: by Pillow, in every mode it can write
to each accepted format, with and without a transparent colour; and byte by byte, every PNG colour
type and bit depth the PNG specification allows (as other encoders write them), with and without
``tRNS``.  Each picture is transparent (or black) on its left half and white on its right half, so
that a variant shows whether transparency and brightness survived.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import Image

from services.resizer import RELEASES
from services.resizer.imaging import ACCEPTED
from tests.conftest import asgi_client
from tests.services.test_resizer import app_for

pytestmark = pytest.mark.anyio

W, H = 40, 24
VARIANTS = (
    {"w": 20},
    {"w": 20, "format": "png"},
    {"w": 20, "format": "jpeg"},
    {"w": 20, "format": "webp"},
    {"w": 20, "h": 20, "fit": "cover"},
)
KEYED_MODES = ("1", "L", "I", "I;16", "I;16B", "P", "RGB")  # modes a transparent colour can go with
WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass(frozen=True)
class Sample:
    label: str
    data: bytes

    @property
    def transparent_left(self) -> bool:
        """The file itself says that it has transparency (an alpha channel or a transparent colour):
        its left half must come out transparent in a variant that can carry alpha."""
        with Image.open(io.BytesIO(self.data)) as im:
            return "transparency" in im.info or im.mode in ("LA", "La", "PA", "RGBA", "RGBa")


def half_and_half(mode: str) -> Image.Image:
    """Left half transparent or black, right half white, in ``mode``."""
    if mode in WIDE_GREY:
        im = Image.new(mode, (W, H), 0)
        im.paste(65535 if mode != "F" else 255.0, (W // 2, 0, W, H))  # F: writers clip it to 8 bits
        return im
    rgba = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    rgba.paste((255, 255, 255, 255), (W // 2, 0, W, H))
    if mode == "PA":
        return rgba.convert("P").convert("PA")
    return rgba.convert(mode)


def pillow_written() -> Iterator[Sample]:
    """Every mode Pillow knows, in every accepted format it can write that mode to."""
    for fmt in sorted(ACCEPTED):
        for mode in Image.MODES:
            try:
                im = half_and_half(mode)
            except ValueError:
                continue
            for keyed in (False, True) if mode in KEYED_MODES else (False,):
                buf = io.BytesIO()
                options = {"transparency": im.getpixel((0, 0))} if keyed else {}
                try:
                    im.save(buf, fmt, **options)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # Pillow cannot write this mode to this format: no such file to test
                yield Sample(f"pillow {fmt} {mode}{' +transparency' if keyed else ''}", buf.getvalue())


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(color_type: int, depth: int, *, trns: bool, value: float = 1.0) -> bytes:
    """A PNG written byte by byte (no Pillow): left half value 0 (black, the transparent colour
    when ``trns``), right half ``value`` of the maximum (white at 1.0)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    top = (1 << depth) - 1
    right = 1 if color_type == 3 else round(top * value)
    rows = b""
    for _ in range(H):
        samples: list[int] = []
        for x in range(W):
            v = right if x >= W // 2 else 0
            if color_type in (4, 6):  # with an alpha channel: the left half transparent
                samples += [v] * (channels - 1) + [top if x >= W // 2 else 0]
            else:
                samples += [v] * channels
        rows += b"\0" + _pack(samples, depth)
    header = struct.pack(">IIBBBBB", W, H, depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    if color_type == 3:
        out += _chunk(b"PLTE", bytes([0, 0, 0, 255, 255, 255]))
    if trns:
        key = {0: struct.pack(">H", 0), 2: struct.pack(">HHH", 0, 0, 0), 3: b"\x00"}[color_type]
        out += _chunk(b"tRNS", key)
    return out + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def _pack(samples: list[int], depth: int) -> bytes:
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if depth == 8:
        return bytes(samples)
    out, acc, bits = bytearray(), 0, 0
    for s in samples:
        acc, bits = (acc << depth) | s, bits + depth
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits:
        out.append((acc << (8 - bits)) & 0xFF)
    return bytes(out)


PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def hand_made() -> Iterator[Sample]:
    for color_type, depths in PNG_DEPTHS.items():
        for depth in depths:
            for trns in (False, True) if color_type in (0, 2, 3) else (False,):
                label = f"hand-made PNG colour type {color_type} depth {depth}{' +tRNS' if trns else ''}"
                yield Sample(label, png(color_type, depth, trns=trns))


def all_samples() -> list[Sample]:
    """Each distinct file once (Pillow writes some modes to some formats as the same bytes)."""
    seen: dict[bytes, Sample] = {}
    for s in [*pillow_written(), *hand_made()]:
        seen.setdefault(s.data, s)
    return list(seen.values())


def check_variant(sample: Sample, params: dict[str, object], status: int, content_type: str, body: bytes) -> str:
    """'' when the variant is right, else what is wrong with it."""
    if 400 <= status < 500:
        return ""  # a refusal is fine, as long as it is a clear one (checked by the caller)
    if status != 200:
        return f"answered {status}"
    im = Image.open(io.BytesIO(body))
    im.load()
    want = (20, 20) if params.get("fit") == "cover" else (20, 12)
    if im.size != want:
        return f"size {im.size}, not {want}"
    rgba = im.convert("RGBA")
    left, right = rgba.getpixel((1, want[1] // 2)), rgba.getpixel((want[0] - 2, want[1] // 2))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    if min(right[:3]) < 200 or right[3] < 250:
        return f"the white half came out {right}"
    keeps_alpha = content_type in ("image/png", "image/webp")
    if sample.transparent_left and keeps_alpha and left[3] > 5:
        return f"the transparent half came out opaque {left}"
    if not sample.transparent_left and (left[3] < 250 or max(left[:3]) > 40):
        return f"the black half came out {left}"
    return ""


def test_the_samples_cover_the_modes_that_broke():
    labels = {s.label for s in [*pillow_written(), *hand_made()]}
    assert len(labels) >= 80 and len(all_samples()) >= 45
    for needed in (
        "pillow PNG 1 +transparency",
        "pillow PNG I;16 +transparency",
        "pillow PNG LA",
        "pillow PNG P +transparency",
        "pillow GIF P +transparency",
        "pillow WEBP RGBA",
        "pillow JPEG CMYK",
        "hand-made PNG colour type 0 depth 16 +tRNS",
        "hand-made PNG colour type 3 depth 1 +tRNS",
    ):
        assert needed in labels


@pytest.mark.parametrize("release", RELEASES)
async def test_every_mode_gives_a_variant_or_a_clear_refusal(tmp_path, release):
    wrong: list[str] = []
    async with asgi_client(app_for(f"sqlite:///{tmp_path / 'modes.db'}", release)) as c:
        for sample in all_samples():
            up = await c.post("/images", content=sample.data)
            if 400 <= up.status_code < 500 and up.json()["error"]["message"]:
                continue
            if up.status_code != 201:
                wrong.append(f"{sample.label}: upload answered {up.status_code} {up.text[:200]}")
                continue
            for params in VARIANTS:
                r = await c.get(f"/images/{up.json()['id']}", params=params)
                if 400 <= r.status_code < 500:
                    assert r.json()["error"]["message"], r.text
                problem = check_variant(sample, params, r.status_code, r.headers.get("content-type", ""), r.content)
                if problem:
                    wrong.append(f"{sample.label} {params}: {problem}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("release", RELEASES)
async def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, release):
    async with asgi_client(app_for(f"sqlite:///{tmp_path / 'grey.db'}", release)) as c:
        up = await c.post("/images", content=png(0, 16, trns=False, value=0.5))
        r = await c.get(f"/images/{up.json()['id']}", params={"w": 20})
        assert r.status_code == 200
        grey = Image.open(io.BytesIO(r.content)).convert("L").getpixel((15, 6))
        assert isinstance(grey, int) and 118 <= grey <= 138  # half of 65535 is half of 255, not white
