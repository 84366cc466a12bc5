"""Release 2.0's rendering, from the port to the new framework: Pillow's ``ImageOps`` helpers.

``ImageOps.contain`` and ``ImageOps.fit`` size and crop in one call each, replacing the hand-written
arithmetic of 1.0; the JPEG decoder is still asked for a reduced size first.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from services.resizer.imaging import VariantSpec, encode, normalise_mode, target_size


def decode(data: bytes, spec: VariantSpec) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        im.draft(None, target_size(im.size, spec))
    return im


def fit(im: Image.Image, spec: VariantSpec) -> Image.Image:
    im = normalise_mode(im)
    if spec.fit == "cover" and spec.width and spec.height:
        box = (min(spec.width, im.width), min(spec.height, im.height))
        return ImageOps.fit(im, box, Image.Resampling.LANCZOS)
    return ImageOps.contain(im, target_size(im.size, spec), Image.Resampling.LANCZOS)


def render(data: bytes, spec: VariantSpec) -> tuple[bytes, str]:
    im = decode(data, spec)
    return encode(fit(im, spec), im.format or "PNG", spec)
