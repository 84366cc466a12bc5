"""Signed tracking tokens: ``CAMPAIGN.CONTACT.SEND.SIGNATURE``.

The signature is HMAC-SHA256 over the three ids with the service's token secret, truncated to
128 bits and base64url-encoded.  A token that does not verify is counted and never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from core.secret_files import secret_in_file

MAX_ID = 2**63 - 1
SIGNATURE_BYTES = 16
SECRET_WAIT_S = 10.0  # how long a process waits for another to finish writing the secret file


@dataclass(frozen=True)
class Send:
    campaign_id: int
    contact_id: int
    send_id: int


def _signature(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint(secret: bytes, send: Send) -> str:
    for value in (send.campaign_id, send.contact_id, send.send_id):
        if not 0 <= value <= MAX_ID:
            raise ValueError("ids must be between 0 and 2**63-1")
    payload = f"{send.campaign_id}.{send.contact_id}.{send.send_id}"
    return f"{payload}.{_signature(secret, payload)}"


def verify(secret: bytes, token: str) -> Send | None:
    if len(token) > 120:
        return None
    parts = token.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 19 for p in parts[:3]):
        return None
    payload = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3].encode(), _signature(secret, payload).encode()):
        return None
    ids = [int(p) for p in parts[:3]]
    if any(i > MAX_ID for i in ids):
        return None
    return Send(*ids)


def load_or_create_secret(configured: str, state_dir: str, *, wait: float = SECRET_WAIT_S) -> bytes:
    """The configured secret, else one kept in the state directory (shared by every release there),
    in a file of its own (``core.secret_files``: 0600 from the start, never read as empty)."""
    if configured:
        return configured.encode()
    return secret_in_file(Path(state_dir) / "opens-token-secret", wait_s=wait).encode()
