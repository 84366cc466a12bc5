"""HTTP API of the open tracker: the pixel, campaign reports, token minting (admin) and stats."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, distinct, func, select, update
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.app import create_app, parse_json, read_body, require_token
from core.errors import Conflict, Unprocessable
from core.hashing import bucket
from core.settings import Settings
from services import decimal, path_id, storable
from services.opens import tokens
from services.opens.intake import EventWriter
from services.opens.schema import metadata, opens, raw_events
from services.opens.spool import Spool

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
MAX_MINT = 10_000
# 10,000 sends with ids of 19 digits are about 1 MiB of JSON: over the app-wide default body limit,
# so the app takes bodies this large and every other endpoint reads its own smaller limit.
MINT_MAX_BYTES = 2 << 20
REPROCESS_MAX_BYTES = 4096


def create_opens_app(settings: Settings) -> Starlette:
    settings = settings.with_overrides(service="opens")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = app.state.engine
        app.state.secret = tokens.load_or_create_secret(settings.token_secret, settings.state_dir)
        writer = EventWriter(engine, Spool(settings.spool_path), settings.group_commit_ms / 1000)
        app.state.writer = writer
        await writer.start()
        try:
            yield
        finally:
            await writer.stop()

    app = create_app(
        settings,
        [
            Route("/o/{token}.gif", pixel, methods=["GET", "HEAD"]),
            Route("/campaigns/{campaign_id}/opens", campaign_report, methods=["GET"]),
            Route("/admin/tokens", mint_tokens, methods=["POST"]),
            Route("/admin/reprocess", reprocess, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ],
        lifespan=lifespan,
        metadata=metadata,
        max_body_bytes=max(settings.max_body_bytes, MINT_MAX_BYTES),
        durable_commits=True,  # a pixel answered is an open no mail client will send again
    )
    m = app.state.metrics
    app.state.pixel_hits = m.counter("opens_pixel_hits_total", "Pixel hits by outcome.", ["outcome"])
    return app


def client_address(request: Request) -> str:
    """The address the nearest proxy (the router) saw: the last ``X-Forwarded-For`` entry, the one it
    appended; entries before it are whatever the client sent, and anyone can write them."""
    forwarded = request.headers.get("x-forwarded-for", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last or (request.client.host if request.client else "")


async def pixel(request: Request) -> Response:
    app = request.app
    s: Settings = app.state.settings
    send = tokens.verify(app.state.secret, request.path_params["token"])
    if send is None:
        app.state.pixel_hits.labels(s.service, s.release, "bad_token").inc()
        return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)
    event_id = uuid.uuid4().hex
    client_ip = client_address(request)
    event = {
        "event_id": event_id,
        "campaign_id": send.campaign_id,
        "contact_id": send.contact_id,
        "send_id": send.send_id,
        "user_agent": request.headers.get("user-agent", "")[:512],
        "client_ip": client_ip[:64],
        "received_at": datetime.now(UTC).isoformat(),
        "bucket": bucket(event_id),
    }
    where = await app.state.writer.submit(event)
    app.state.pixel_hits.labels(s.service, s.release, f"stored_{where}").inc()
    return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)


async def campaign_report(request: Request) -> Response:
    campaign_id = path_id(request, "campaign_id", "campaign", tokens.MAX_ID)
    engine: Engine = request.app.state.engine

    def fetch() -> dict[str, Any]:
        counted = opens.c.filtered.is_(None)
        where = (opens.c.campaign_id == campaign_id, counted)
        with engine.connect() as conn:
            total, unique, machine = conn.execute(
                select(
                    func.count(),
                    func.count(distinct(opens.c.contact_id)),
                    func.count().filter(opens.c.machine.is_(True)),
                ).where(*where)
            ).one()
            by_client: dict[str, int] = dict(
                conn.execute(select(opens.c.client, func.count()).where(*where).group_by(opens.c.client)).all()
            )
            filtered = conn.execute(
                select(func.count()).where(opens.c.campaign_id == campaign_id, ~counted)
            ).scalar_one()
        return {
            "campaign_id": campaign_id,
            "total": total,
            "unique": unique,
            "machine": machine,
            "filtered": filtered,
            "by_client": by_client,
        }

    return JSONResponse(await run_in_threadpool(fetch))


async def mint_tokens(request: Request) -> Response:
    require_token(request, request.app.state.settings.admin_token)
    raw = await read_body(request, MINT_MAX_BYTES)
    body = parse_json(raw, 'JSON: {"sends": [{"campaign_id", "contact_id", "send_id"}]}')
    sends = body.get("sends") if isinstance(body, dict) else None
    if not isinstance(sends, list) or not 0 < len(sends) <= MAX_MINT:
        raise Unprocessable(f"'sends' must be a list of 1 to {MAX_MINT} sends")
    out = []
    for i, item in enumerate(sends):
        send = _send(item)
        if send is None:
            raise Unprocessable(
                f"sends[{i}]: campaign_id, contact_id and send_id must be ids from 0 to {tokens.MAX_ID}"
            )
        token = tokens.mint(request.app.state.secret, send)
        out.append({**item, "token": token, "url": f"/o/{token}.gif"})
    return JSONResponse({"tokens": out})


def _send(item: object) -> tokens.Send | None:
    if not isinstance(item, dict):
        return None
    campaign, contact, send = (_id(item.get(name)) for name in ("campaign_id", "contact_id", "send_id"))
    if campaign is None or contact is None or send is None:
        return None
    return tokens.Send(campaign, contact, send)


def _id(value: object) -> int | None:
    """A send's id: a JSON integer (never a bool, nor a float, which int() truncated or overflowed
    on) or a string of ASCII digits, from 0 to ``tokens.MAX_ID``; else None."""
    if isinstance(value, str):
        return decimal(value, 0, tokens.MAX_ID)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= tokens.MAX_ID:
        return value
    return None


async def reprocess(request: Request) -> Response:
    """Hand back every event a release processed, for the processors to do again (after a rollback).

    Processing is idempotent: events already recorded stay recorded once, and those the release
    acknowledged without recording are recorded now.
    """
    require_token(request, request.app.state.settings.admin_token)
    body = parse_json(await read_body(request, REPROCESS_MAX_BYTES) or b"{}", 'JSON like {"release": "1.1"}')
    release = body.get("release") if isinstance(body, dict) else None
    if not isinstance(release, str) or not release or not storable(release):
        raise Unprocessable("'release' is required: the release whose events to process again")
    if release == request.app.state.settings.release:  # the hook asks stable for the canary's
        raise Conflict(
            f"{release} is this release: its events are its own to keep; hand back a rolled-back release's",
            code="own_release",
        )

    def reset() -> int:
        with request.app.state.engine.begin() as conn:
            result = conn.execute(
                update(raw_events)
                .where(raw_events.c.processed_by == release)
                .values(processed_at=None, processed_by=None)
            )
            return int(result.rowcount)

    count = await run_in_threadpool(reset)
    return JSONResponse({"release": release, "events_handed_back": count})


def event_stats(engine: Engine) -> dict[str, Any]:
    """Counts that reconcile pixel hits with outcomes: stored = processed + pending."""
    with engine.connect() as conn:
        stored, pending = conn.execute(
            select(func.count(), func.count().filter(raw_events.c.processed_at.is_(None)))
        ).one()
        by_release: dict[str, int] = dict(
            conn.execute(
                select(raw_events.c.processed_by, func.count())
                .where(raw_events.c.processed_at.is_not(None))
                .group_by(raw_events.c.processed_by)
            ).all()
        )
        recorded, filtered = conn.execute(
            select(func.count().filter(opens.c.filtered.is_(None)), func.count().filter(opens.c.filtered.is_not(None)))
        ).one()
    return {
        "events_stored": stored,
        "events_pending": pending,
        "events_processed_by_release": by_release,
        "opens_recorded": recorded,
        "events_filtered": filtered,
        "unaccounted": stored - pending - recorded - filtered,
    }


async def stats(request: Request) -> Response:
    data = await run_in_threadpool(event_stats, request.app.state.engine)
    data["events_spooled"] = await run_in_threadpool(request.app.state.writer.spool.size)
    return JSONResponse(data)
