"""Webhook settings: typed values from YAML, errors that name the field and the line."""

from __future__ import annotations

import pytest

from canary.notify import EventKind, WebhookConfigError, WebhookKind, load_webhooks, parse_webhooks
from canary.notify.payloads import signature, verify

SECRET = "a-secret-of-16-c"

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
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    generic, slack = load_webhooks(GOOD, "hooks.yaml")
    assert generic.kind is WebhookKind.GENERIC and generic.secret == SECRET
    assert generic.events == frozenset({EventKind.ROLLED_BACK, EventKind.PROMOTED})
    assert generic.wants(EventKind.ROLLED_BACK) and not generic.wants(EventKind.STARTED)
    assert slack.kind is WebhookKind.SLACK and slack.events is None and slack.wants(EventKind.HELD)
    assert "XYZ" not in repr(slack) and SECRET not in repr(generic)


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
    assert "hooks.yaml:4: webhooks[0].secret: the secret of the webhook to example.com is too short" in joined


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("not a list", "webhooks: must be a list of webhooks"),
        ([{"url": "https://x.example", "secret": SECRET, "events": []}], "webhooks[0].events: must be 'all'"),
        ([{"url": "https://x.example", "secret_env": "NOPE_NOT_SET"}], "webhooks[0].secret_env: environment"),
        ([{"url": "https://x.example", "secret": ""}], "webhooks[0].secret: must be a non-empty string"),
        # `secret:` with no value is YAML's null: a generic webhook would go out unsigned
        ([{"url": "https://x.example", "secret": None}], "webhooks[0].secret: must be a non-empty string"),
        (["https://x.example"], "webhooks[0]: must be a mapping"),
        ([{"url": "https://x.example/" + "a" * 3000, "secret": SECRET}], "webhooks[0].url: must be"),
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


def test_an_alias_bomb_in_the_webhooks_file_is_refused_before_it_expands():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(WebhookConfigError, match="more than 100000 values once YAML aliases are expanded"):
        load_webhooks(bomb + "webhooks: *i\n", "x.yaml")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://hooks.example.com:abc/x", "invalid port"),
        ("https://hooks.example.com:99999/x", "port out of range"),
        ("http://[::1/x", "invalid ipv6"),
    ],
)
def test_a_url_httpx_cannot_send_to_is_refused_naming_the_webhook_and_the_field(url, words):
    items = [{"url": "https://ok.example/x", "secret": SECRET}, {"url": url, "secret": SECRET}]
    with pytest.raises(WebhookConfigError) as caught:
        parse_webhooks(items, env={})
    (problem,) = caught.value.problems
    assert problem.startswith("<settings>: webhooks[1].url: not a usable address")
    assert words in problem.lower()


@pytest.mark.parametrize(
    ("item", "env", "message"),
    [
        (
            {"secret_env": "HOOK_SECRET"},
            {"HOOK_SECRET": " "},
            "environment variable 'HOOK_SECRET' holds 0 character(s)",
        ),
        (
            {"secret_env": "HOOK_SECRET"},
            {"HOOK_SECRET": "   "},
            "environment variable 'HOOK_SECRET' holds 0 character(s)",
        ),
        (
            {"secret_env": "HOOK_SECRET"},
            {"HOOK_SECRET": "k"},
            "environment variable 'HOOK_SECRET' holds 1 character(s)",
        ),
        ({"secret": "k"}, {}, "it has 1 character(s)"),
        ({"secret": "   "}, {}, "it has 0 character(s)"),
        ({"secret": f"  {SECRET[:15]}  "}, {}, "it has 15 character(s)"),  # spaces do not count
        ({"kind": "slack", "secret": "k"}, {}, "it has 1 character(s)"),  # a Slack hook's, where it has one
    ],
)
def test_a_blank_or_short_secret_is_refused_naming_the_webhook_and_the_field(item, env, message):
    items = [
        {"url": "https://ok.example/x", "secret": SECRET},
        {"url": "https://user:pw@hooks.example.com:8443/x", **item},
    ]
    with pytest.raises(WebhookConfigError) as caught:
        parse_webhooks(items, env=env)
    (problem,) = caught.value.problems
    field = "secret_env" if "secret_env" in item else "secret"
    assert problem == (
        f"<settings>: webhooks[1].{field}: the secret of the webhook to hooks.example.com is too short: "
        f"{message}, leaving out spaces; give it at least 16"
    )


def test_a_secret_of_16_characters_signs():
    (hook,) = parse_webhooks([{"url": "https://hooks.example.com/x", "secret_env": "S"}], env={"S": SECRET})
    assert hook.secret == SECRET


def test_verify_answers_false_to_any_timestamp_or_signature_a_sender_makes_up():
    now = 1_700_000_000
    good = signature(SECRET, now, b"{}")
    assert verify(SECRET, str(now), b"{}", good, now=now)
    for timestamp, signed in [
        ("²", good),  # a digit to str.isdigit, not to int()
        ("١٧٠٠٠٠٠٠٠٠", good),  # int() reads these Arabic-Indic digits as the time signed, but they are not its text
        ("9" * 5000, good),  # more digits than int() converts
        ("", good),
        (" 1700000000", good),
        (str(now), "sha256=é"),  # hmac.compare_digest refuses a str that is not ASCII
        (str(now), good.upper()),
        (str(now - 301), signature(SECRET, now - 301, b"{}")),  # too old
    ]:
        assert verify(SECRET, timestamp, b"{}", signed, now=now) is False, (timestamp[:12], signed)
