"""Which code each release of the resizer runs: its rendering and its data access."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.resizer import imaging, render_ported, render_ported_upright
from services.resizer.store import ImageStore
from services.resizer.store_reused import ThreadReusedStore


@dataclass(frozen=True)
class ReleaseCode:
    render: Callable[[bytes, imaging.VariantSpec], tuple[bytes, str]]
    store: type[ImageStore]


CODE = {
    "1.0": ReleaseCode(imaging.render, ImageStore),
    "2.0": ReleaseCode(render_ported.render, ThreadReusedStore),
    "2.1": ReleaseCode(render_ported_upright.render, ImageStore),
}
