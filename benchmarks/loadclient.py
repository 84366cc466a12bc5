"""A minimal keep-alive HTTP/1.1 GET client on asyncio streams, fast enough not to be the bottleneck.

httpx spends about a millisecond of CPU per request (DESIGN.md); on two cores that would measure
the client, not the server.  This client only knows GET with Content-Length answers, which is all
the benchmarks need.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _worker(
    host: str, port: int, paths: Sequence[str], start: int, step: int, headers: str, result: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(start, len(paths), step):
            t0 = time.perf_counter()
            writer.write(f"GET {paths[i]} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            result.latencies.append(time.perf_counter() - t0)
            result.requests += 1
            if not status_line.startswith(b"HTTP/1.1 2"):
                result.errors += 1
    finally:
        writer.close()


async def run_gets(
    url: str, paths: Sequence[str], concurrency: int, headers: dict[str, str] | None = None
) -> LoadResult:
    host, port = url.removeprefix("http://").split(":")
    header_text = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    result = LoadResult()
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_worker(host, int(port), paths, i, concurrency, header_text, result) for i in range(concurrency))
    )
    result.seconds = time.perf_counter() - t0
    return result
