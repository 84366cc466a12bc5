"""Checking uploaded images and rendering resized variants with Pillow.

Checks happen on the header before any pixel is decoded (format, dimensions against the
decompression-bomb limit), then a full decode proves the file is complete.  Rendering asks the
JPEG decoder for a reduced size first (``draft``: DCT scaling, many times faster than decoding
every pixel), applies EXIF orientation, converts every mode to RGB, RGBA or L (transparent colours
becoming alpha, 16-bit grey scaled to 8 bits), and resizes with
``reducing_gap`` so that large reductions run in integer steps before the final filter.  A variant
larger than its output format holds (``MAX_SIDE``) is refused with a 422 before it is encoded.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageMath, ImageOps, UnidentifiedImageError

from core.errors import Unprocessable, UnsupportedMedia

ACCEPTED = {"JPEG", "PNG", "GIF", "WEBP"}
OUTPUTS = {"jpeg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp")}
DEFAULT_OUTPUT = {"JPEG": "jpeg", "PNG": "png", "GIF": "png", "WEBP": "webp"}
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500, "PNG": 2**31 - 1}
"""Pixels a side that each output format holds: WebP's 14-bit sizes; libjpeg's ``JPEG_MAX_DIMENSION``
(the JPEG format itself has 16 bits, 65535); PNG's 31 bits.  The encoders refused larger with a
``ValueError`` (WebP) or an ``OSError`` (JPEG), which answered 500."""
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees
ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class VariantSpec:
    width: int | None
    height: int | None
    fit: str = "contain"
    output: str | None = None
    quality: int = 85

    def key(self) -> str:
        return f"{self.width or 0}x{self.height or 0}-{self.fit}-{self.output or 'auto'}-q{self.quality}"


def inspect(data: bytes, max_pixels: int) -> ImageInfo:
    """Validate an upload; raise 415/422 with a reason a person can act on."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            if fmt not in ACCEPTED:
                raise UnsupportedMedia(f"{fmt or 'this'} images are not accepted: send JPEG, PNG, GIF or WebP")
            width, height = im.size
            if width * height > max_pixels:
                raise Unprocessable(
                    f"image is {width}x{height} pixels, over the limit of {max_pixels} (decompression bomb?)",
                    code="too_many_pixels",
                )
            orientation = im.getexif().get(ORIENTATION_TAG, 1)
            im.load()
    except Image.DecompressionBombError:
        raise Unprocessable(
            "image is too large to decode safely (decompression bomb)", code="too_many_pixels"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedMedia("not an image: send JPEG, PNG, GIF or WebP") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Unprocessable(f"image is corrupt or truncated: {exc}", code="corrupt_image") from None
    if orientation in SWAPS_AXES:
        width, height = height, width
    return ImageInfo(fmt, width, height)


def target_size(src: tuple[int, int], spec: VariantSpec) -> tuple[int, int]:
    """The size to resize to before any crop (never larger than the source)."""
    sw, sh = src
    scales = [s for s in ((spec.width / sw) if spec.width else None, (spec.height / sh) if spec.height else None) if s]
    if not scales:
        return src
    scale = max(scales) if spec.fit == "cover" and len(scales) == 2 else min(scales)
    scale = min(scale, 1.0)
    return max(1, round(sw * scale)), max(1, round(sh * scale))


def resize(im: Image.Image, spec: VariantSpec) -> Image.Image:
    """``im`` at ``target_size``, the one sizing rule of every release (at least 1 px a side)."""
    want = target_size(im.size, spec)
    if im.size == want:
        return im
    return im.resize(want, Image.Resampling.LANCZOS, reducing_gap=2.0)


def render(data: bytes, spec: VariantSpec) -> tuple[bytes, str]:
    source = Image.open(io.BytesIO(data))
    fmt = source.format or "PNG"
    orientation = source.getexif().get(ORIENTATION_TAG, 1)
    shown = (source.height, source.width) if orientation in SWAPS_AXES else source.size
    want = target_size(shown, spec)
    if fmt == "JPEG":
        stored_want = (want[1], want[0]) if orientation in SWAPS_AXES else want
        source.draft(None, stored_want)
    im = resize(normalise_mode(upright(source)), spec)  # from the size decoded: draft may have changed it
    if spec.fit == "cover" and spec.width and spec.height:
        im = _centre_crop(im, min(spec.width, im.width), min(spec.height, im.height))
    return encode(im, fmt, spec)


def encode(im: Image.Image, source_format: str, spec: VariantSpec) -> tuple[bytes, str]:
    """Encode a rendered variant in the asked format (default: the source's, GIF becoming PNG)."""
    output = spec.output or DEFAULT_OUTPUT.get(source_format, "png")
    pil_format, content_type = OUTPUTS[output]
    _check_fits(im.size, output)
    if pil_format == "JPEG" and im.mode not in ("RGB", "L"):
        im = _flatten(im)
    buf = io.BytesIO()
    options = {"quality": spec.quality} if pil_format in ("JPEG", "WEBP") else {"compress_level": 3}
    im.save(buf, pil_format, **options)
    return buf.getvalue(), content_type


def _check_fits(size: tuple[int, int], output: str) -> None:
    """A 422 naming the format's limit, the variant's size and what would fit, if it is over the limit."""
    width, height = size
    limit = MAX_SIDE[OUTPUTS[output][0]]
    if max(size) <= limit:
        return
    holding = [name for name, (pil_format, _) in OUTPUTS.items() if MAX_SIDE[pil_format] >= max(size)]
    raise Unprocessable(
        f"a {output} image is at most {limit} pixels a side and this variant is {width}x{height}: "
        f"ask for a smaller w or h{''.join(f', or format={name}' for name in holding)}",
        code="too_large_for_format",
        detail={"format": output, "max_side": limit, "width": width, "height": height},
    )


def upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, so that a phone photo taken sideways is shown the right way up."""
    return ImageOps.exif_transpose(im) or im


def normalise_mode(im: Image.Image) -> Image.Image:
    """RGB, RGBA or L, whatever the file's mode: CMYK and palettes converted, transparency kept as alpha.

    A transparent colour (a PNG ``tRNS`` chunk on a grey, RGB, palette or 1-bit image) becomes an
    alpha channel before any resampling: a colour key does not survive interpolation, and Pillow
    refuses to write one that the conversion left in the wrong shape (the int of a grey image on an
    RGB one: the ``ValueError`` that answered 500).  16-bit grey is scaled to 8 bits, not clipped
    (clipping turned every such image white).
    """
    if im.mode in SIXTEEN_BIT_GREY:
        return _eight_bit_grey(im)
    if im.mode in PREMULTIPLIED:  # Pillow converts these only to their straight-alpha twins
        im = im.convert(PREMULTIPLIED[im.mode])
    if "transparency" in im.info:
        converted = im.convert("RGBA")
    elif im.mode in ("RGB", "RGBA", "L"):
        return im
    elif im.mode in ("LA", "PA"):
        converted = im.convert("RGBA")
    elif im.mode == "1":
        converted = im.convert("L")
    else:  # P without transparency, CMYK, YCbCr, LAB, HSV, RGBX, F
        converted = im.convert("RGB")
    converted.info.pop("transparency", None)
    return converted


SIXTEEN_BIT_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}


def _eight_bit_grey(im: Image.Image) -> Image.Image:
    """16-bit grey (Pillow's I;16 or I) to L, keeping its transparent value as alpha."""
    wide = im.convert("I")
    grey = wide.point(lambda v: v * (1 / 256)).convert("L")
    key = im.info.get("transparency")
    if not isinstance(key, int):
        return grey
    alpha: Image.Image = ImageMath.lambda_eval(lambda a: (a["im"] != key) * 255, im=wide)
    return Image.merge("LA", (grey, alpha.convert("L"))).convert("RGBA")


def _flatten(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _centre_crop(im: Image.Image, width: int, height: int) -> Image.Image:
    left = math.floor((im.width - width) / 2)
    top = math.floor((im.height - height) / 2)
    return im.crop((left, top, left + width, top + height))
