"""``canary.stack.secret_file``: the admin and alert tokens are never readable by other users."""

from __future__ import annotations

import os

from canary.stack import secret_file
from tests.file_modes import modes_before_chmod, permissive_umask


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
