"""Webhook settings: typed values from YAML, errors that name the field and the line."""

from __future__ import annotations

import pytest

from canary.notify import EventKind, WebhookConfigError, WebhookKind, load_webhooks, parse_webhooks

GOOD = """\
notifications:
  webhooks:
    - url: https://hooks.example.com/releases
      secret_env: HOOK_SECRET
      events: [rolled_back, promoted]
    - url: https://hooks.slack.com/services/T0/B0/XYZ
      kind: slack
"""


def test_a_good_file_gives_typed_webhooks(monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    generic, slack = load_webhooks(GOOD, "hooks.yaml")
    assert generic.kind is WebhookKind.GENERIC and generic.secret == "s3cret"
    assert generic.events == frozenset({EventKind.ROLLED_BACK, EventKind.PROMOTED})
    assert generic.wants(EventKind.ROLLED_BACK) and not generic.wants(EventKind.STARTED)
    assert slack.kind is WebhookKind.SLACK and slack.events is None and slack.wants(EventKind.HELD)
    assert "XYZ" not in repr(slack) and "s3cret" not in repr(generic)


def test_every_problem_names_its_field_and_line():
    text = """\
webhooks:
  - url: ftp://example.com/x
    kind: teams
    secret: abc
    events: [rolled_back, exploded]
    colour: red
  - url: https://example.com/generic
"""
    with pytest.raises(WebhookConfigError) as caught:
        load_webhooks(text, "hooks.yaml")
    problems = caught.value.problems
    assert "hooks.yaml:2: webhooks[0].url: must be an http:// or https:// address" in problems[1]
    joined = "\n".join(problems)
    assert "hooks.yaml:3: webhooks[0].kind: 'teams' is not one of generic, slack" in joined
    assert "hooks.yaml:5: webhooks[0].events[1]: 'exploded' is not an event" in joined
    assert "hooks.yaml:6: webhooks[0].colour: unknown field" in joined
    assert "hooks.yaml:7: webhooks[1].secret: a generic webhook signs its bodies" in joined


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("not a list", "webhooks: must be a list of webhooks"),
        ([{"url": "https://x.example", "secret": "s", "events": []}], "webhooks[0].events: must be 'all'"),
        ([{"url": "https://x.example", "secret_env": "NOPE_NOT_SET"}], "webhooks[0].secret_env: environment"),
        ([{"url": "https://x.example", "secret": ""}], "webhooks[0].secret: must be a non-empty string"),
        # `secret:` with no value is YAML's null: a generic webhook would go out unsigned
        ([{"url": "https://x.example", "secret": None}], "webhooks[0].secret: must be a non-empty string"),
        (["https://x.example"], "webhooks[0]: must be a mapping"),
        ([{"url": "https://x.example/" + "a" * 3000, "secret": "s"}], "webhooks[0].url: must be"),
    ],
)
def test_bad_mappings_are_refused_with_the_field(items, message):
    with pytest.raises(WebhookConfigError) as caught:
        parse_webhooks(items, env={})
    assert message in str(caught.value)


def test_a_file_without_webhooks_or_not_yaml_is_refused():
    with pytest.raises(WebhookConfigError, match="webhooks: missing"):
        load_webhooks("other: 1\n", "x.yaml")
    with pytest.raises(WebhookConfigError, match="not valid YAML"):
        load_webhooks("webhooks: [\n", "x.yaml")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://hooks.example.com:abc/x", "invalid port"),
        ("https://hooks.example.com:99999/x", "port out of range"),
        ("http://[::1/x", "invalid ipv6"),
    ],
)
def test_a_url_httpx_cannot_send_to_is_refused_naming_the_webhook_and_the_field(url, words):
    items = [{"url": "https://ok.example/x", "secret": "s"}, {"url": url, "secret": "s"}]
    with pytest.raises(WebhookConfigError) as caught:
        parse_webhooks(items, env={})
    (problem,) = caught.value.problems
    assert problem.startswith("<settings>: webhooks[1].url: not a usable address")
    assert words in problem.lower()
