"""``canary.stack.secret_file``: the admin and alert tokens are never readable by other users."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from canary.stack import secret_file


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


def test_secret_files_are_created_0600_even_with_a_permissive_umask(tmp_path, monkeypatch):
    chmodded_from = modes_before_chmod(monkeypatch)
    with permissive_umask():
        generated = secret_file(tmp_path / "admin-token")
        given = secret_file(tmp_path / "prometheus" / "admin-token", "the-token")
    for path in (generated, given):
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    assert all(mode == 0o600 for mode in chmodded_from), [oct(m) for m in chmodded_from]
    token = generated.read_text()
    assert token.strip()
    assert given.read_text() == "the-token"
    assert secret_file(generated).read_text() == token  # made once, kept after
