"""Headers across the proxy: hop-by-hop headers dropped, ``X-Forwarded-*`` set.

One pass over the request's headers gives both what the split reads (lower-cased names) and the
header block sent upstream, already encoded: header work is a good part of a proxied request's cost.
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


def request_headers(raw: list[tuple[bytes, bytes]], client: str, scheme: str) -> tuple[dict[str, str], bytes]:
    """(the request's headers by lower-cased name, the header block for the upstream request).

    Repeated headers are joined with ", " (cookies with "; "); headers named in ``Connection`` are
    dropped; content-length and framing are the upstream client's to add."""
    named: dict[bytes, bytes] = {}
    dropped: set[bytes] = set()
    for name, value in raw:
        lower = name.lower()
        if lower in named:
            named[lower] += (b"; " if lower == b"cookie" else b", ") + value
        else:
            named[lower] = value
        if lower == b"connection":
            dropped.update(v.strip().lower() for v in value.split(b","))
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
    """The upstream's answer headers for the client: hop-by-hop ones dropped, content-length kept."""
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower == b"content-length" or lower not in HOP_BY_HOP:
            out.append((lower, value))
    return out
