"""Images made with Pillow for traffic and tests: the kinds that break resizers.

Each maker returns encoded bytes.  The photo-like pattern has a distinct colour per quadrant, so
that a test can tell from a few pixels whether an image was turned the right way up.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 20)


def quadrants(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right yellow."""
    im = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(im)
    w2, h2 = width // 2, height // 2
    draw.rectangle((0, 0, w2 - 1, h2 - 1), fill=RED)
    draw.rectangle((w2, 0, width - 1, h2 - 1), fill=GREEN)
    draw.rectangle((0, h2, w2 - 1, height - 1), fill=BLUE)
    draw.rectangle((w2, h2, width - 1, height - 1), fill=YELLOW)
    return im.convert(mode) if mode != "RGB" else im


def jpeg(width: int = 600, height: int = 400, *, progressive: bool = False, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    quadrants(width, height).save(buf, "JPEG", quality=quality, progressive=progressive)
    return buf.getvalue()


def exif_rotated_jpeg(width: int = 600, height: int = 400, orientation: int = 6) -> bytes:
    """A photo stored sideways, as phones do: pixels as the sensor saw them, plus the EXIF tag.

    The stored pixels are the upright quadrant pattern turned so that applying ``orientation``
    brings it back; an upright rendering shows red top-left and is ``width`` x ``height``.
    """
    upright = quadrants(width, height)
    inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    stored = upright.transpose(inverse[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def cmyk_jpeg(width: int = 400, height: int = 300) -> bytes:
    buf = io.BytesIO()
    quadrants(width, height, "CMYK").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def palette_png_with_transparency(width: int = 300, height: int = 200) -> bytes:
    im = Image.new("P", (width, height), 0)
    im.putpalette([0, 0, 0, 220, 20, 20] + [0] * (254 * 3))
    ImageDraw.Draw(im).rectangle((0, 0, width // 2 - 1, height - 1), fill=1)
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)  # the right half is fully transparent
    return buf.getvalue()


def animated_gif(width: int = 200, height: int = 120, frames: int = 3) -> bytes:
    images = [Image.new("RGB", (width, height), c).convert("P") for c in (RED, GREEN, BLUE)[:frames]]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


def webp(width: int = 300, height: int = 200) -> bytes:
    buf = io.BytesIO()
    quadrants(width, height).save(buf, "WEBP", quality=80)
    return buf.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """Few bytes, many pixels: a decompression bomb."""
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]
