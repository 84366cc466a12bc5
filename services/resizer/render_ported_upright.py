"""Release 2.1's rendering: the ported ``ImageOps`` path, with the photo turned upright first.

The ported ``fit`` (``ImageOps.fit``, and 1.0's sizing rule) works on the stored pixels and ignores
the EXIF orientation tag, so a phone photo taken sideways must be transposed before it is sized.
"""

from __future__ import annotations

from services.resizer.imaging import VariantSpec, encode, upright
from services.resizer.render_ported import decode, fit


def render(data: bytes, spec: VariantSpec) -> tuple[bytes, str]:
    im = decode(data, spec)
    return encode(fit(upright(im), spec), im.format or "PNG", spec)
