"""Kept-alive HTTP clients for what calls out on every tick (the controller's health checks and
metric queries): building an httpx client costs some 20 ms of CPU, most of it its TLS context, more
than the request it makes."""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (the system's CAs, verified), made once per process."""
    return httpx.create_ssl_context()


class LoopClient:
    """One kept-alive ``httpx.AsyncClient`` per running event loop: the controller runs one loop, so
    it keeps one client; a caller on a new loop (each ``asyncio.run``) gets a new one."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = httpx.AsyncClient(verify=tls_context(), **self.options), loop
        return self._client
