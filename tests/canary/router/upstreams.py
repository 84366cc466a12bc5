"""Small real upstreams for router tests: each reports which track it is and what it received."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def echo_app(track: str, fail: bool = False, delay_s: float = 0.0) -> Starlette:
    async def echo(request: Request) -> Response:
        if delay_s:
            await asyncio.sleep(delay_s)
        body = await request.body()
        if fail or request.url.path.startswith("/fail"):
            return JSONResponse({"track": track, "error": "boom"}, status_code=500)
        return JSONResponse(
            {
                "track": track,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "body_bytes": len(body),
                "body_head": body[:40].decode("latin-1"),
            }
        )

    async def stream(request: Request) -> Response:
        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(5):
                yield f"chunk-{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")  # chunked: no content-length

    return Starlette(
        routes=[
            Route("/stream", stream, methods=["GET"]),
            Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "HEAD", "DELETE"]),
        ]
    )
