"""For the tests of secret files: a permissive umask, and the mode a file had each time it was
chmodded (a secret must be born 0600, not fixed up after)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes_before_chmod(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The mode a file had each time something chmodded it: a secret must be born 0600, not fixed up."""
    seen: list[int] = []
    real = os.chmod

    def recording(path, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(os.stat(path).st_mode & 0o777)
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "chmod", recording)
    return seen
