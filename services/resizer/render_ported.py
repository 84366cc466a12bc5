"""Release 2.0's rendering, from the port to the new framework: Pillow's ``ImageOps`` helpers.

``ImageOps.fit`` sizes and crops a cover variant in one call, replacing the hand-written arithmetic
of 1.0; a contain variant is sized by 1.0's own rule (``imaging.resize``), not ``ImageOps.contain``,
which rounds differently and rounded a thin strip's short side to 0 px (2000x4 at w=100: 100x0,
refused by every encoder, a 500).  The JPEG decoder is still asked for a reduced size first.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from services.resizer.imaging import VariantSpec, encode, normalise_mode, resize, target_size


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
    return resize(im, spec)


def render(data: bytes, spec: VariantSpec) -> tuple[bytes, str]:
    im = decode(data, spec)
    return encode(fit(im, spec), im.format or "PNG", spec)
