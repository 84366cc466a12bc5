"""``canary up``'s tokens, one per role, and what it says of the dashboard's readers."""

from __future__ import annotations

import os

from canary.stack import StackTokens, dashboard_reading
from core.settings import Settings


def test_each_role_has_its_own_token_kept_0600_and_the_environment_may_give_them(tmp_path, monkeypatch):
    for name in ("CANARY_TABLE_TOKEN", "CANARY_SERVICE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    tokens = StackTokens.of(tmp_path, "the-admin-token")
    assert len({tokens.admin, tokens.table, tokens.service}) == 3  # none stands for another
    for role, value in (("table", tokens.table), ("service", tokens.service)):
        path = tmp_path / f"{role}-token"
        assert path.read_text().strip() == value and os.stat(path).st_mode & 0o777 == 0o600
    assert StackTokens.of(tmp_path, "the-admin-token") == tokens  # made once, kept after
    settings = tokens.given_to(Settings(db_url="sqlite://"))
    assert (settings.admin_token, settings.table_token, settings.service_token) == (
        tokens.admin,
        tokens.table,
        tokens.service,
    )
    monkeypatch.setenv("CANARY_SERVICE_TOKEN", "given-service-token")
    assert StackTokens.of(tmp_path, "the-admin-token").service == "given-service-token"


def test_a_controller_started_alone_fills_in_the_tokens_it_hands_releases(tmp_path):
    alone = StackTokens.filled_in(Settings(state_dir=str(tmp_path), table_token="given"))
    assert alone.table_token == "given"  # a token set is kept
    assert alone.service_token and alone.service_token == (tmp_path / "service-token").read_text().strip()
    assert StackTokens.filled_in(Settings(state_dir=str(tmp_path))).service_token == alone.service_token


def test_canary_up_says_who_reads_the_dashboard_also_when_the_environment_sets_the_read_token():
    assert dashboard_reading(Settings(), {}) == "open to read from this machine"
    assert dashboard_reading(Settings(), {"CANARY_READ_TOKEN": "r"}) == "the read token reads it"
    assert dashboard_reading(Settings(read_token="r"), {}) == "the read token reads it"
