"""Calling an upstream: one pooled aiohttp session, per-try timeouts, failures as values.

aiohttp is the upstream client because it is about five times cheaper per request than httpx's
default client on this machine (DESIGN.md, and ``benchmarks.router``); the proxy never exposes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

SMALL_BODY = 256 * 1024  # answers up to this size are read whole (faster than streaming)


@dataclass
class Attempt:
    response: aiohttp.ClientResponse | None = None
    error: str = ""  # "timeout", "connect", "reset", ...: empty when the upstream answered
    body: bytes | None = None  # read whole when small

    @property
    def failed(self) -> bool:
        return self.response is None or self.response.status >= 500


class UpstreamClient:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # pass bodies through as they are
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),  # send only what the client sent
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
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
        assert self.session is not None, "UpstreamClient.start() first"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 5.0), sock_read=timeout_s)
        try:
            response = await self.session.request(
                method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
            )
            attempt = Attempt(response=response)
            length = response.content_length
            if method == "HEAD" or (length is not None and length <= SMALL_BODY):
                attempt.body = await response.read()
                response.release()
            return attempt
        except TimeoutError:
            return Attempt(error="timeout")
        except aiohttp.ClientConnectorError:
            return Attempt(error="connect")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
            return Attempt(error="reset")
        except aiohttp.ClientError as exc:
            return Attempt(error=type(exc).__name__)
