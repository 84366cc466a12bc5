"""HTTP API of the importer."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.app import create_app, parse_json, read_body
from core.errors import BadRequest, NotFound, Unprocessable, UnsupportedMedia
from core.settings import Settings
from services import MAX_INT32, path_id, query_int, storable
from services.importer import csvfile, store
from services.importer.releases import SUPPRESSED_POLICY
from services.importer.schema import contacts, metadata, suppressions

SUPPRESSION_REASONS = ("unsubscribed", "bounced", "complained")
MAX_IDEMPOTENCY_KEY = 128
# Address book and contact ids are INTEGER columns: at most 2**31-1 on PostgreSQL (SQLite holds more;
# both backends take the same ids)
MAX_ROW_ID = MAX_INT32


def create_importer_app(settings: Settings) -> Starlette:
    settings = settings.with_overrides(service="importer")

    app = create_app(
        settings,
        [
            Route("/address-books/{book_id}/imports", create_import, methods=["POST"]),
            Route("/imports/{import_id}", get_import, methods=["GET"]),
            Route("/address-books/{book_id}/contacts", list_contacts, methods=["GET"]),
            Route("/suppressions", list_suppressions, methods=["GET"]),
            Route("/suppressions/{email}", put_suppression, methods=["PUT"]),
            Route("/suppressions/{email}", delete_suppression, methods=["DELETE"]),
        ],
        metadata=metadata,
        max_body_bytes=settings.import_max_bytes,
    )
    counters = app.state.metrics
    app.state.import_rows = counters.counter("importer_rows_total", "Rows seen by imports, by outcome.", ["outcome"])
    return app


async def create_import(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    book_id = path_id(request, "book_id", "address book", MAX_ROW_ID)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMedia("send the CSV as multipart/form-data with fields 'file' and 'mapping'")
    async with request.form(max_files=1, max_fields=5) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable("a 'file' field with the CSV is required", code="file_missing")
        raw_mapping = form.get("mapping")
        upload.file.seek(0)
        result, replayed = await run_in_threadpool(
            _import_file, engine, book_id, upload, raw_mapping if isinstance(raw_mapping, str) else None, settings, key
        )
    if not replayed:
        rows = request.app.state.import_rows
        s, r = settings.service, settings.release
        for outcome in ("created", "updated", "suppressed_skipped", "rejected"):
            rows.labels(s, r, outcome).inc(result[outcome])
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return JSONResponse(result, status_code=200 if replayed else 201, headers=headers)


def _import_file(
    engine: Engine,
    book_id: int,
    upload: UploadFile,
    raw_mapping: str | None,
    settings: Settings,
    key: str | None,
) -> tuple[dict[str, Any], bool]:
    mapping = csvfile.Mapping.parse(raw_mapping)  # here, in a worker thread: parsing up to 1 MB of JSON is CPU
    items = csvfile.read_rows(upload.file, mapping, settings.import_max_rows)
    return store.run_import(
        engine,
        book_id,
        items,
        release=settings.release,
        idempotency_key=key,
        on_suppressed=SUPPRESSED_POLICY[settings.release],
    )


async def get_import(request: Request) -> Response:
    import_id = request.path_params["import_id"]
    result = (
        await run_in_threadpool(store.get_import, request.app.state.engine, import_id) if storable(import_id) else None
    )
    if result is None:
        raise NotFound("no such import")
    return JSONResponse(result)


def _limit(request: Request) -> int:
    return query_int(request, "limit", 1, 1000, default=100)


async def list_contacts(request: Request) -> Response:
    book_id = path_id(request, "book_id", "address book", MAX_ROW_ID)
    limit = _limit(request)
    after_id = query_int(request, "after", 0, MAX_ROW_ID, default=0)
    query = (
        select(contacts)
        .where(contacts.c.address_book_id == book_id, contacts.c.id > after_id)
        .order_by(contacts.c.id)
        .limit(limit)
    )

    def fetch() -> list[dict[str, Any]]:
        with request.app.state.engine.connect() as conn:
            return [
                {
                    "id": r.id,
                    "email": r.email,
                    "first_name": r.first_name,
                    "last_name": r.last_name,
                    "data": json.loads(r.data),
                    "updated_at": r.updated_at.isoformat(),
                }
                for r in conn.execute(query)
            ]

    items = await run_in_threadpool(fetch)
    next_after = items[-1]["id"] if len(items) == limit else None
    return JSONResponse({"contacts": items, "next_after": next_after})


async def list_suppressions(request: Request) -> Response:
    limit, after = _limit(request), request.query_params.get("after", "")
    if not storable(after):
        raise BadRequest("after must be an address from the previous page", code="bad_parameter")
    query = select(suppressions).where(suppressions.c.email > after).order_by(suppressions.c.email).limit(limit)

    def fetch() -> list[dict[str, Any]]:
        with request.app.state.engine.connect() as conn:
            return [{"email": r.email, "reason": r.reason} for r in conn.execute(query)]

    items = await run_in_threadpool(fetch)
    next_after = items[-1]["email"] if len(items) == limit else None
    return JSONResponse({"suppressions": items, "next_after": next_after})


async def put_suppression(request: Request) -> Response:
    email = request.path_params["email"].strip().lower()
    if not csvfile.EMAIL_RE.match(email) or len(email) > csvfile.MAX_EMAIL:
        raise Unprocessable(f"{email[:80]!r} is not a valid address")
    body = parse_json(await read_body(request, 4096) or b"{}", 'JSON like {"reason": "unsubscribed"}')
    reason = body.get("reason") if isinstance(body, dict) else None
    if reason not in SUPPRESSION_REASONS:
        raise Unprocessable(f"reason must be one of {', '.join(SUPPRESSION_REASONS)}")

    def upsert() -> None:
        with request.app.state.engine.begin() as conn:
            conn.execute(delete(suppressions).where(suppressions.c.email == email))
            conn.execute(suppressions.insert().values(email=email, reason=reason, created_at=datetime.now(UTC)))

    await run_in_threadpool(upsert)
    return JSONResponse({"email": email, "reason": reason})


async def delete_suppression(request: Request) -> Response:
    email = request.path_params["email"].strip().lower()
    if not storable(email):
        raise NotFound(f"{email[:80]!r} is not suppressed")

    def remove() -> int:
        with request.app.state.engine.begin() as conn:
            removed: int = conn.execute(delete(suppressions).where(suppressions.c.email == email)).rowcount
            return removed

    if not await run_in_threadpool(remove):
        raise NotFound(f"{email} is not suppressed")
    return Response(status_code=204)
