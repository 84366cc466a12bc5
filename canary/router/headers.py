"""Headers across the proxy: hop-by-hop headers dropped, ``X-Forwarded-*`` set.

Hop-by-hop, in both directions: the fixed ``HOP_BY_HOP`` set and every header the message's own
``Connection`` header names (RFC 9110 7.6.1), found by one function, :func:`connection_named`.

One pass over the request's headers gives both what the split reads (lower-cased names) and the
header block sent upstream, already encoded: header work is a good part of a proxied request's cost.
Both directions remember their last few hundred results: a keep-alive client sends the same
headers request after request, and an upstream answers with the same ones (its Date changes once
a second).  Only small header sets are remembered, so the caches stay under a few megabytes: a set
is small when all its raw headers, hop-by-hop ones included (each cache's key holds them all),
take at most ``CACHED_BYTES``.
"""

from __future__ import annotations

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",  # the router answers 100 Continue itself
    }
)


_SET_HERE = frozenset({b"x-forwarded-proto", b"x-forwarded-host"})
CACHED = 512  # entries per cache; emptied when full
CACHED_HEADERS = 16  # header sets with more headers are not remembered
CACHED_BYTES = 4096  # nor ones whose raw headers (names and values, all of them: the key) are larger

_requests: dict[tuple[tuple[tuple[bytes, bytes], ...], str, str], tuple[dict[str, str], bytes]] = {}
_responses: dict[tuple[tuple[bytes, bytes], ...], list[tuple[bytes, bytes]]] = {}


def request_headers(raw: list[tuple[bytes, bytes]], client: str, scheme: str) -> tuple[dict[str, str], bytes]:
    """(the request's headers by lower-cased name, the header block for the upstream request).

    Repeated headers are joined with ", " (cookies with "; "); headers named in ``Connection`` are
    dropped; content-length and framing are the upstream client's to add.  The dict may be shared
    with other requests that carried the same headers: read it, never change it."""
    if len(raw) > CACHED_HEADERS:
        return _request_headers(raw, client, scheme)
    key = (tuple(raw), client, scheme)
    found = _requests.get(key)
    if found is None:
        found = _request_headers(raw, client, scheme)
        if len(found[1]) <= CACHED_BYTES and _raw_bytes(raw) + len(client) + len(scheme) <= CACHED_BYTES:
            if len(_requests) >= CACHED:
                _requests.clear()
            _requests[key] = found
    return found


def _raw_bytes(raw: list[tuple[bytes, bytes]]) -> int:
    """What a cache key made of ``raw`` holds: every header's name and value."""
    return sum(len(name) + len(value) for name, value in raw)


def connection_named(raw: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names (lower-cased) that the message's ``Connection`` headers list: hop-by-hop
    for this one message, never forwarded.  Empty without a Connection header."""
    named: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def _request_headers(raw: list[tuple[bytes, bytes]], client: str, scheme: str) -> tuple[dict[str, str], bytes]:
    named: dict[bytes, bytes] = {}
    for name, value in raw:
        lower = name.lower()
        if lower in named:
            named[lower] += (b"; " if lower == b"cookie" else b", ") + value
        else:
            named[lower] = value
    dropped = connection_named(raw)
    forwarded_for = named.pop(b"x-forwarded-for", None)
    host = named.get(b"host")
    block = [
        name + b": " + value + b"\r\n"
        for name, value in named.items()
        if name not in HOP_BY_HOP and name not in dropped and name not in _SET_HERE
    ]
    client_b = client.encode("latin-1")
    block.append(b"x-forwarded-for: " + (forwarded_for + b", " + client_b if forwarded_for else client_b) + b"\r\n")
    block.append(b"x-forwarded-proto: " + scheme.encode("latin-1") + b"\r\n")
    if host:
        block.append(b"x-forwarded-host: " + host + b"\r\n")
    if forwarded_for is not None:
        named[b"x-forwarded-for"] = forwarded_for
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in named.items()}, b"".join(block)


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's answer headers for the client: hop-by-hop ones (and those its Connection
    header names) dropped, content-length kept.
    A new list each time (the caller adds to it)."""
    if len(raw) > CACHED_HEADERS:
        return _response_headers(raw)
    key = tuple(raw)
    found = _responses.get(key)
    if found is None:
        found = _response_headers(raw)
        if _raw_bytes(raw) <= CACHED_BYTES:  # the key: every raw header, hop-by-hop ones too
            if len(_responses) >= CACHED:
                _responses.clear()
            _responses[key] = found
    return found.copy()


def _response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    dropped = connection_named(raw)
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower == b"content-length" or (lower not in HOP_BY_HOP and lower not in dropped):
            out.append((lower, value))
    return out
