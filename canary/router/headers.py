"""Headers across the proxy: hop-by-hop headers dropped, ``X-Forwarded-*`` set."""

from __future__ import annotations

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",  # the router answers 100 Continue itself
    }
)


def upstream_headers(raw: list[tuple[bytes, bytes]], client: str, scheme: str) -> dict[str, str]:
    """Headers for the upstream request (content-length is recomputed by the client)."""
    named_in_connection: set[str] = set()
    out: dict[str, str] = {}
    forwarded_for = ""
    host = ""
    for name_b, value_b in raw:
        name, value = name_b.decode("latin-1").lower(), value_b.decode("latin-1")
        if name == "connection":
            named_in_connection.update(v.strip().lower() for v in value.split(","))
        if name == "host":
            host = value
        if name == "x-forwarded-for":
            forwarded_for = value
            continue
        if name in HOP_BY_HOP:
            continue
        out[name] = f"{out[name]}, {value}" if name in out and name != "cookie" else value
    for name in named_in_connection:
        out.pop(name, None)
    out["x-forwarded-for"] = f"{forwarded_for}, {client}" if forwarded_for else client
    out["x-forwarded-proto"] = scheme
    if host:
        out["x-forwarded-host"] = host
    return out


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's answer headers for the client: hop-by-hop ones dropped, content-length kept."""
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower == b"content-length" or lower.decode("latin-1") not in HOP_BY_HOP:
            out.append((lower, value))
    return out
