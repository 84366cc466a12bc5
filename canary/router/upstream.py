"""Calling an upstream: failures as values, answers as plain data.

GETs go through ``FastClient`` (pooled keep-alive connections, httptools, answers read whole); HEAD,
streamed request bodies and everything else through one pooled aiohttp session, whose answers are
read whole when small and streamed otherwise.  The proxy sees only :class:`Attempt`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from canary.router.fastclient import FastClient, UpstreamError

SMALL_BODY = 256 * 1024  # aiohttp answers up to this size are read whole (faster than streaming)


@dataclass
class Attempt:
    status: int = 0  # 0: the upstream never answered (see ``error``)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | None = None  # None: stream it from ``stream``
    stream: aiohttp.ClientResponse | None = None
    error: str = ""  # "timeout", "connect", "reset", ...

    @property
    def answered(self) -> bool:
        return self.status > 0

    @property
    def failed(self) -> bool:
        return not self.answered or self.status >= 500

    @property
    def content_type(self) -> str:
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == b"content-type"), "")

    def release(self) -> None:
        if self.stream is not None:
            self.stream.release()


class UpstreamClient:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.fast = FastClient()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # pass bodies through as they are
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),  # send only what the client sent
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        self.fast.close()
        if self.session is not None:
            await self.session.close()

    async def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | AsyncIterator[bytes] | None,
        timeout_s: float,
    ) -> Attempt:
        if method == "GET" and (body is None or isinstance(body, bytes)):
            try:
                status, response_headers, data = await self.fast.get(url, headers, body, timeout_s)
            except UpstreamError as exc:
                return Attempt(error=exc.kind)
            return Attempt(status=status, headers=response_headers, body=data)
        return await self._send_aiohttp(method, url, headers, body, timeout_s)

    async def _send_aiohttp(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | AsyncIterator[bytes] | None,
        timeout_s: float,
    ) -> Attempt:
        assert self.session is not None, "UpstreamClient.start() first"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 5.0), sock_read=timeout_s)
        try:
            response = await self.session.request(
                method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
            )
            attempt = Attempt(status=response.status, headers=list(response.raw_headers), stream=response)
            length = response.content_length
            if method == "HEAD" or (length is not None and length <= SMALL_BODY):
                attempt.body = await response.read()
                response.release()
                attempt.stream = None
            return attempt
        except TimeoutError:
            return Attempt(error="timeout")
        except aiohttp.ClientConnectorError:
            return Attempt(error="connect")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
            return Attempt(error="reset")
        except aiohttp.ClientError as exc:
            return Attempt(error=type(exc).__name__)
