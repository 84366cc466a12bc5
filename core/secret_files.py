"""Secrets kept in files of their own: created 0600 from the start (never readable by others for a
moment, whatever the umask), made once by whichever process comes first; a process that finds the
file still empty (another is writing it) reads it again until it has content, for a bounded time,
and never uses an empty secret."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

WAIT_S = 10.0


def secret_in_file(path: Path, value: str = "", wait_s: float = WAIT_S) -> str:
    """The secret in ``path``; when there is none yet, ``value`` (or a new random one) is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return _written(path, wait_s)
    secret = value or secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secret)
    return secret


def _written(path: Path, wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        secret = path.read_text(encoding="ascii").strip()
        if secret:
            return secret
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"secret file {path} is still empty after {wait_s:g}s: another process created it "
                "and did not write it (if none is starting, delete the file)"
            )
        time.sleep(0.02)
