"""``core.settings.load_settings``: defaults < file < environment < flags, refused in words."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import load_settings


def test_the_environment_overrides_the_file_and_flags_override_both(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("port: 8100\nadmin_token: from-file\n")
    s = load_settings({"CANARY_PORT": "8200"}, str(config))
    assert (s.port, s.admin_token) == (8200, "from-file")
    assert load_settings({"CANARY_PORT": "8200"}, str(config), port=8300).port == 8300
    with pytest.raises(ConfigError, match="CANARY_PORT: port must be int, got 'eighty'"):
        load_settings({"CANARY_PORT": "eighty"})


@pytest.mark.parametrize("name", ["CANARY_ADMIN_TOKEN", "CANARY_TABLE_TOKEN", "CANARY_SERVICE_TOKEN"])
def test_a_token_with_a_space_around_it_is_refused_it_would_match_no_request(name):
    # the server hands a header's value without its surrounding spaces: nobody could ever present it
    field = name.removeprefix("CANARY_").lower()
    with pytest.raises(ConfigError, match=f"{name}: {field} begins or ends with a space"):
        load_settings({name: "the-token "})
    assert getattr(load_settings({name: "the-token"}), field) == "the-token"


def test_an_hmac_key_is_taken_as_given_it_is_never_sent_in_a_header():
    assert load_settings({"CANARY_TOKEN_SECRET": "key from a file\n"}).token_secret == "key from a file\n"
