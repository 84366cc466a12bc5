"""Stable hashing into buckets, shared by the router (sticky keys) and queue consumers (message ids).

The same key lands in the same bucket on every machine and every Python run (no ``hash()``, which
is salted per process).
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def bucket(key: str) -> int:
    """0 <= bucket < BUCKETS, uniform over keys."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS
