"""The common request and answer heads recognised without a parser callback per header.

Where it sits: the protocol server (``canary.router.server``) and the upstream connection
(``canary.router.upstream_connection``) try these first on every read; anything they do not
recognise goes to httptools' parser as before, which frames, refuses and streams everything else.

What they recognise is deliberately narrow, a strict subset of what httptools accepts with the
same meaning, so no request is ever forwarded that the parser would have refused:

- a request: exactly one complete ``GET <path> HTTP/1.1`` head and nothing after it; the target
  made of RFC 3986 path and query characters only; header names tokens; values visible ASCII,
  spaces and tabs; no Content-Length, Transfer-Encoding, Expect or Upgrade, and Connection only
  ``keep-alive`` or ``close``;
- an answer: ``HTTP/1.1`` with a status of 200-499 other than 204 and 304, headers as above, one
  Content-Length and no Transfer-Encoding, and exactly that many body bytes after the head.

A header block is analysed once and remembered (a keep-alive client repeats its headers request
after request, an upstream its answer headers; nginx's Date changes once a second): a bounded
cache of small blocks, emptied when full.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from canary.router.headers import HOP_BY_HOP, connection_named, request_headers
from canary.router.wire import REASONS

_REQUEST_LINE = re.compile(rb"GET (/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*) HTTP/1\.1")
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\x20-\x7e\t]*")
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\x20-\x7e\t]*\r\n)*")
MAX_HEAD = 8192  # bigger heads are the parser's
MAX_HEADERS = 100
CACHED = 512  # remembered header blocks per kind; emptied when full
CACHED_BYTES = 4096  # larger blocks are analysed each time: the caches stay a few megabytes at most
_NOT_SIMPLE_REQUEST = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


def _header_list(block: bytes) -> list[tuple[bytes, bytes]] | None:
    """``block``: header lines, each ending in CRLF (no final empty line).  None: not strict."""
    if len(block) > MAX_HEAD or not _HEADER_LINES.fullmatch(block):
        return None
    lines = block.split(b"\r\n")[:-1]
    if len(lines) > MAX_HEADERS:
        return None
    out = []
    for line in lines:
        name, _, value = line.partition(b":")
        out.append((name, value.lstrip(b" \t")))  # as httptools: leading whitespace only
    return out


def _connection_close(headers: list[tuple[bytes, bytes]]) -> bool | None:
    """True: ``Connection: close``; False: none or keep-alive; None: any other token (not simple)."""
    close = False
    for name, value in headers:
        if name.lower() == b"connection":
            for token in value.lower().split(b","):
                token = token.strip()
                if token == b"close":
                    close = True
                elif token not in (b"keep-alive", b""):
                    return None
    return close


@dataclass(frozen=True)
class SimpleRequest:
    """A recognised request head's headers, analysed once per distinct block and client."""

    raw: list[tuple[bytes, bytes]]  # as received (the slow path's RequestHead takes them)
    named: dict[str, str]  # by lower-cased name (what the split reads); shared: never change it
    upstream_block: bytes  # the header block for the upstream, with its final empty line
    keep: bool  # the client keeps the connection open after the answer
    client: str  # the client's address (in the upstream block's X-Forwarded-For)


_requests: dict[tuple[bytes, str], SimpleRequest | None] = {}


def simple_request(data: bytes, client: str) -> tuple[bytes, SimpleRequest] | None:
    """(the target, its analysed headers) when ``data`` is exactly one simple GET head, else None."""
    end = data.find(b"\r\n\r\n")
    if end != len(data) - 4 or not data.startswith(b"GET /"):
        return None
    line_end = data.find(b"\r\n")
    line = _REQUEST_LINE.fullmatch(data, 0, line_end)
    if line is None:
        return None
    block = data[line_end + 2 : end + 2]
    key = (block, client)
    info = _requests.get(key)
    if info is None:
        if key in _requests:
            return None  # seen before: not simple
        info = _analyse_request(block, client)
        if len(block) <= CACHED_BYTES:
            if len(_requests) >= CACHED:
                _requests.clear()
            _requests[key] = info
        if info is None:
            return None
    return line.group(1), info


def _analyse_request(block: bytes, client: str) -> SimpleRequest | None:
    raw = _header_list(block)
    if raw is None or any(name.lower() in _NOT_SIMPLE_REQUEST for name, _ in raw):
        return None
    close = _connection_close(raw)
    if close is None:
        return None
    named, upstream = request_headers(raw, client, "http")
    return SimpleRequest(raw, named, upstream + b"\r\n", not close, client)


@dataclass
class SimpleAnswer:
    """A recognised answer head, analysed once per distinct head."""

    status: int
    length: int  # its Content-Length
    keep: bool  # the upstream keeps the connection open
    keep_alive_s: float | None  # the upstream's ``Keep-Alive: timeout=N``
    headers: list[tuple[bytes, bytes]]  # for the client: lower-cased, hop-by-hop and length dropped
    _heads: dict[str, bytes] = field(default_factory=dict)  # by track, for a client that keeps its connection

    def client_head(self, track: str, keep: bool) -> bytes:
        """The head the client gets, encoded once per track (for a client keeping its connection)."""
        head = self._heads.get(track) if keep else None
        if head is None:
            lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, REASONS.get(self.status, b"Unknown"))]
            lines += [name + b": " + value + b"\r\n" for name, value in self.headers]
            lines.append(b"x-canary-track: " + track.encode() + b"\r\n")
            lines.append(b"content-length: %d\r\n" % self.length)
            if not keep:
                lines.append(b"connection: close\r\n")
            head = b"".join(lines) + b"\r\n"
            if keep:
                self._heads[track] = head
        return head


_answers: dict[bytes, SimpleAnswer | None] = {}


def simple_answer(data: bytes) -> tuple[SimpleAnswer, bytes] | None:
    """(the analysed head, the body) when ``data`` is exactly one simple whole answer, else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[: end + 4]
    info = _answers.get(head)
    if info is None:
        if head in _answers or len(head) > MAX_HEAD:
            return None  # seen before (not simple), or too big for the fast path
        info = _analyse_answer(head)
        if len(head) <= CACHED_BYTES:
            if len(_answers) >= CACHED:
                _answers.clear()
            _answers[head] = info
        if info is None:
            return None
    if len(data) != end + 4 + info.length:
        return None
    return info, data[end + 4 :]


def _analyse_answer(head: bytes) -> SimpleAnswer | None:
    line_end = head.find(b"\r\n")
    line = _STATUS_LINE.fullmatch(head, 0, line_end)
    if line is None:
        return None
    status = int(line.group(1))
    raw = _header_list(head[line_end + 2 : -2])
    if raw is None or not 200 <= status < 500 or status in (204, 304):
        return None
    lengths = [value for name, value in raw if name.lower() == b"content-length"]
    if len(lengths) != 1 or not lengths[0].isdigit() or any(n.lower() == b"transfer-encoding" for n, _ in raw):
        return None
    close = _connection_close(raw)
    if close is None:
        return None
    keep_alive_s = None
    headers = []
    dropped = connection_named(raw)  # none today (only keep-alive or close are simple): the one rule anyway
    for name, value in raw:
        lower = name.lower()
        if lower == b"keep-alive":
            for part in value.split(b","):
                key, _, number = part.strip().partition(b"=")
                if key.lower() == b"timeout" and number.strip().isdigit():
                    keep_alive_s = float(number.strip())
        if lower not in HOP_BY_HOP and lower not in dropped:
            headers.append((lower, value))
    return SimpleAnswer(status, int(lengths[0]), not close, keep_alive_s, headers)
