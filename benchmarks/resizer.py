"""Images/s for a 3000x2000 JPEG resized to 300 px wide.

Figures: the render path alone (what each uncached request pays), and the HTTP endpoint with the
variant cache off (every request renders).  Reference, same run: the naive
``Image.open().resize()`` of the same bytes to the same size, saved as JPEG.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path

import httpx
from PIL import Image

from benchmarks.common import best_of, report, service_process
from benchmarks.loadclient import run_gets
from canary.traffic import images
from services.resizer.imaging import VariantSpec, render

N = 60
HTTP_REQUESTS = 200


def naive(data: bytes) -> bytes:
    im = Image.open(io.BytesIO(data))
    out = im.resize((300, 200))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def main() -> None:
    data = images.jpeg(3000, 2000, quality=90)
    spec = VariantSpec(width=300, height=None)
    naive_s = best_of(3, lambda: [naive(data) for _ in range(N)]) / N
    render_s = best_of(3, lambda: [render(data, spec) for _ in range(N)]) / N
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        uncached = {"CANARY_VARIANT_CACHE": "false"}  # every request renders
        with service_process("resizer", f"sqlite:///{tmp / 'r.db'}", tmp, env=uncached) as url:
            image_id = httpx.post(f"{url}/images", content=data, timeout=60).json()["id"]
            paths = [f"/images/{image_id}?w=300"] * HTTP_REQUESTS
            asyncio.run(run_gets(url, paths[:10], 2))
            result = asyncio.run(run_gets(url, paths, 4))
        assert result.errors == 0
    report(
        {
            "name": "resizer",
            "source": "3000x2000 JPEG, q90",
            "target": "300 px wide",
            "render_images_per_s": round(1 / render_s, 1),
            "naive_open_resize_images_per_s": round(1 / naive_s, 1),
            "ratio": round(naive_s / render_s, 2),
            "http_uncached_images_per_s": round(result.rate, 1),
            "http_ratio": round(result.rate * naive_s, 2),
            "http_p50_ms": round(result.percentile(0.5) * 1000, 1),
            "goal_ratio": 3,
        }
    )


if __name__ == "__main__":
    main()
