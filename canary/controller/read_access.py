"""Who may read what the controller shows without commanding anything: the dashboard and its event
stream, and Prometheus's target list (``GET /api/targets``).

The read token (``settings.read_token``) or the admin token; with no read token set, reading is open
to clients on loopback that ask for a loopback name (``localhost``, ``127.0.0.1``), not for a name
pointed at it (DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request

from core.errors import Unauthorized


def require_read(request: Request, *, in_query: bool = False) -> None:
    """The read token (or the admin token) as a bearer header, or, ``in_query`` (the event stream
    only: a browser's EventSource sends no headers), as ``?token=``; elsewhere a token in the
    address is not taken (addresses end up in logs)."""
    settings = request.app.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = request.query_params.get("token", "") if in_query else ""
    for expected in (settings.read_token, settings.admin_token):
        if expected and token and hmac.compare_digest(token.encode(), expected.encode()):
            return
    if not settings.read_token and _loopback(request):
        return
    raise Unauthorized("reading needs the read token (or the admin token)", code="token_required")


def _loopback(request: Request) -> bool:
    """A client on loopback that asked for a loopback name: a page elsewhere whose name an attacker
    points at 127.0.0.1 (DNS rebinding) sends its own name as Host, and reads nothing."""
    client = request.client.host if request.client else ""
    asked = request.url.hostname or ""
    return _loopback_address(client) and (asked == "localhost" or _loopback_address(asked.strip("[]")))


def _loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
