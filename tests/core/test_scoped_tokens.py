"""Each service's own tokens, derived from the controller's: what releases and hooks get."""

from __future__ import annotations

import subprocess
import sys

import pytest

from canary.catalog import templates
from core.scoped_tokens import scoped_token, setting_value
from core.settings import Settings


def test_each_service_and_each_role_has_its_own_token_and_an_empty_secret_gives_none():
    tokens = {scoped_token("s3cret-value", role, svc) for role in ("service_token", "table_token") for svc in "ab"}
    assert len(tokens) == 4 and "s3cret-value" not in tokens
    assert scoped_token("s3cret-value", "service_token", "a") == scoped_token("s3cret-value", "service_token", "a")
    assert scoped_token("other-secret", "service_token", "a") not in tokens
    assert scoped_token("", "service_token", "a") == ""  # no token set: nobody is accepted
    with pytest.raises(ValueError, match="needs the service's name"):
        scoped_token("s3cret-value", "service_token", "")


def test_a_template_fills_in_its_own_services_token_and_other_settings_as_they_are():
    settings = Settings(service_token="svc-secret", table_token="tbl-secret", state_dir="/srv/state")
    rendered = templates.render("{settings.service_token} {settings.state_dir}", {"service": "opens"}, settings)
    assert rendered == f"{scoped_token('svc-secret', 'service_token', 'opens')} /srv/state"
    assert setting_value(settings, "table_token", "opens") == scoped_token("tbl-secret", "table_token", "opens")
    with pytest.raises(templates.TemplateError, match="needs the service's name"):
        templates.render("{settings.table_token}", {}, settings)


def test_the_command_prints_what_an_operator_puts_in_the_kubernetes_secret():
    def run(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "core.scoped_tokens", *args]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)

    out = run("opens", "table_token", stdin="tbl-secret\n")
    assert out.returncode == 0 and out.stdout.strip() == scoped_token("tbl-secret", "table_token", "opens")
    assert run("opens", "admin_token", stdin="x").returncode == 2  # only the derived roles
    assert run("opens", "service_token", stdin="").returncode == 2
