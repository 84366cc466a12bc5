"""HTTP API of the resizer (every release: the same endpoints and metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.app import create_app, read_body
from core.errors import BadRequest, NotFound, ServiceUnavailable, Unprocessable
from core.settings import Settings
from services import query_int, storable
from services.resizer import imaging
from services.resizer.decoding import RETRY_AFTER_S, DecodeSlots, decode_slots
from services.resizer.releases import CODE
from services.resizer.schema import metadata
from services.resizer.store import ImageStore

CACHE_CONTROL = "public, max-age=31536000, immutable"


def create_resizer_app(settings: Settings) -> Starlette:
    settings = settings.with_overrides(service="resizer")
    code = CODE[settings.release]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.store = code.store(app.state.engine)
        # Rendering is CPU-bound: more renders at once than cores only adds GIL contention, which
        # starves the short database queries of the other requests.  The rest wait their turn.
        app.state.render_slots = asyncio.Semaphore(os.cpu_count() or 2)
        # Checking an upload decodes all its pixels: memory bounds how many run at once (decoding.py).
        app.state.decode_slots = DecodeSlots(decode_slots(settings))
        yield

    app = create_app(
        settings,
        [
            Route("/images", upload_image, methods=["POST"]),
            Route("/images/{image_id}", get_variant, methods=["GET", "HEAD"]),
            Route("/images/{image_id}/info", get_info, methods=["GET"]),
        ],
        lifespan=lifespan,
        metadata=metadata,
        max_body_bytes=settings.image_max_bytes,
    )
    app.state.render = code.render
    app.state.inspect = imaging.inspect  # the upload check, held like render (tests count decodes through it)
    app.state.decode_slots = None
    m = app.state.metrics
    m.gauge("resizer_uploads_decoding", "Uploads being decoded right now.").set_function(
        lambda: app.state.decode_slots.decoding if app.state.decode_slots else 0
    )
    m.gauge("resizer_uploads_waiting", "Uploads waiting for a decode slot right now.").set_function(
        lambda: app.state.decode_slots.waiting if app.state.decode_slots else 0
    )
    m.gauge("resizer_upload_body_bytes", "Bytes reserved for uploads' bodies right now.").set_function(
        lambda: app.state.decode_slots.held_bytes if app.state.decode_slots else 0
    )
    app.state.variant_outcomes = app.state.metrics.counter(
        "resizer_variants_total", "Variants answered, by cache outcome.", ["cache"]
    )
    return app


def _busy(why: str) -> Response:
    busy = ServiceUnavailable(f"{why}: retry in {RETRY_AFTER_S} s", code="uploads_busy")
    return JSONResponse(busy.body(), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def upload_image(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    slots: DecodeSlots = request.app.state.decode_slots
    declared = request.headers.get("content-length", "")
    reserved = min(int(declared), settings.image_max_bytes) if declared.isdigit() else settings.image_max_bytes
    if not slots.admit(reserved):  # its body is not read: the bodies held are bounded (decoding.py)
        return _busy(f"uploads hold {slots.held_bytes >> 20} MB of bodies")
    try:  # held until it is stored
        return await _store_upload(request, slots, reserved)
    finally:
        slots.leave(reserved)


async def _store_upload(request: Request, slots: DecodeSlots, reserved: int) -> Response:
    settings: Settings = request.app.state.settings
    data = await read_body(request, reserved)  # never more than it reserved, whatever it declared
    if not data:
        raise Unprocessable("empty body: send the image bytes as the request body", code="empty_body")
    if not await slots.acquire():
        return _busy(f"{slots.size} uploads are being decoded and others wait")
    try:
        info = await run_in_threadpool(request.app.state.inspect, data, settings.image_max_pixels)
    finally:
        slots.release()
    image_id = uuid.uuid4().hex
    row = {
        "id": image_id,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    await run_in_threadpool(request.app.state.store.insert_original, row, data)
    return JSONResponse({**row, "url": f"/images/{image_id}"}, status_code=201)


def parse_spec(request: Request, max_side: int) -> imaging.VariantSpec:
    fit = request.query_params.get("fit", "contain")
    if fit not in ("contain", "cover"):
        raise BadRequest("fit must be contain or cover")
    output = request.query_params.get("format") or None
    if output is not None and output not in imaging.OUTPUTS:
        raise BadRequest(f"format must be one of {', '.join(imaging.OUTPUTS)}")
    return imaging.VariantSpec(
        width=query_int(request, "w", 1, max_side),
        height=query_int(request, "h", 1, max_side),
        fit=fit,
        output=output,
        quality=query_int(request, "q", 1, 95, default=85),
    )


async def get_variant(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    store: ImageStore = request.app.state.store
    image_id = request.path_params["image_id"]
    spec = parse_spec(request, settings.image_max_side)
    # Keyed by release too: a release that renders differently must never answer with another's variants
    # (they share the database while side by side, and a shared cache would hide the new code's output).
    key = f"{settings.release}/{spec.key()}"
    found = await run_in_threadpool(store.load, image_id, key, settings.variant_cache) if storable(image_id) else None
    if found is None:
        raise NotFound(f"no image {image_id[:80]!r}")
    sha, cached = found
    hit = isinstance(cached, tuple)
    etag = '"' + hashlib.sha256(f"{sha}/{key}".encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    outcome = request.app.state.variant_outcomes.labels(settings.service, settings.release, "hit" if hit else "miss")
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        outcome.inc()
        return Response(status_code=304, headers=headers)
    if hit:
        body, content_type = cached
    else:
        async with request.app.state.render_slots:
            body, content_type = await run_in_threadpool(request.app.state.render, cached, spec)
        if settings.variant_cache:
            await run_in_threadpool(store.store_variant, image_id, key, body, content_type)
    outcome.inc()
    return Response(body if request.method == "GET" else b"", media_type=content_type, headers=headers)


async def get_info(request: Request) -> Response:
    image_id = request.path_params["image_id"]
    info = await run_in_threadpool(request.app.state.store.info, image_id) if storable(image_id) else None
    if info is None:
        raise NotFound(f"no image {image_id[:80]!r}")
    return JSONResponse(info)
