"""The heads the router writes to its clients, encoded once and kept.

An upstream answers alike request after request (its Date changes once a second), so an encoded
head is looked up by (status, headers, keep, extra) before it is built again.  The cache is
bounded: heads of at most 16 headers and 4 KiB only, and it is emptied when it holds
``HEADS_CACHED``.
"""

from __future__ import annotations

from canary.router.wire import REASONS

HEADS_CACHED = 512
_HEADS: dict[tuple[int, tuple[tuple[bytes, bytes], ...], bool, bytes], bytes] = {}


def encode_head(status: int, headers: list[tuple[bytes, bytes]], keep: bool, extra: bytes) -> bytes:
    """An answer's status line and headers; ``connection: close`` unless ``keep``; ``extra`` is
    one more encoded header line (``transfer-encoding: chunked``) or nothing."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))]
    lines += [k + b": " + v + b"\r\n" for k, v in headers]
    if not keep:
        lines.append(b"connection: close\r\n")
    lines.append(extra + b"\r\n")
    return b"".join(lines)


def answer_head(status: int, headers: list[tuple[bytes, bytes]], keep: bool, extra: bytes) -> bytes:
    """``encode_head``, from the cache when this head was written before."""
    if len(headers) > 16:
        return encode_head(status, headers, keep, extra)
    key = (status, tuple(headers), keep, extra)
    head = _HEADS.get(key)
    if head is None:
        head = encode_head(status, headers, keep, extra)
        if len(head) <= 4096:
            if len(_HEADS) >= HEADS_CACHED:
                _HEADS.clear()
            _HEADS[key] = head
    return head
