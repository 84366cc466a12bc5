"""Where notifications go: typed webhook settings, parsed from YAML or a mapping.

Sits at the edge of the notify package: the controller's settings (or a catalog entry) hold a
``webhooks:`` list; :func:`load_webhooks` turns it into :class:`Webhook` values, or raises a
:class:`WebhookConfigError` whose every problem names the field and, from YAML, the line.

```yaml
webhooks:
  - url: https://hooks.example.com/releases
    kind: generic                # JSON body signed with HMAC-SHA256 (needs a secret)
    secret_env: RELEASE_HOOK_SECRET   # or secret: "..." (not in a file you commit); 16 characters or more
    events: [rolled_back, promoted, held]
  - url: https://hooks.slack.com/services/T000/B000/XXXX
    kind: slack                  # a Slack-compatible message
    events: all                  # the default
```
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
import yaml

from canary.notify.events import EventKind
from core.errors import ConfigError
from core.yaml_lines import MAX_NODES, expanded_size, line_map, line_of

FIELDS = frozenset({"url", "kind", "secret", "secret_env", "events"})
MAX_URL = 2000
MIN_SECRET = 16  # characters of a signing secret, once leading and trailing spaces are left out
MAX_WEBHOOKS = 50


class WebhookKind(enum.StrEnum):
    GENERIC = "generic"
    SLACK = "slack"


@dataclass(frozen=True)
class Webhook:
    url: str
    kind: WebhookKind = WebhookKind.GENERIC
    secret: str | None = None
    events: frozenset[EventKind] | None = None  # None: every kind of event

    def wants(self, kind: EventKind) -> bool:
        return self.events is None or kind in self.events

    @property
    def key(self) -> str:
        """What the outbox stores for this webhook: a digest of the URL (a Slack URL is a secret)."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:32]

    def __repr__(self) -> str:  # never print the secret, nor a Slack URL's token
        try:
            parts = urlsplit(self.url)
        except ValueError:  # a URL made past parse_webhooks: still printable
            return f"Webhook(<unusable url>, kind={self.kind.value})"
        return f"Webhook({parts.scheme}://{parts.netloc}/..., kind={self.kind.value})"


class WebhookConfigError(ConfigError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def load_webhooks(text: str, source: str = "<settings>") -> tuple[Webhook, ...]:
    """A YAML document with a top-level ``webhooks:`` list (or ``notifications: {webhooks: ...}``)."""
    try:
        node = yaml.compose(text)
        if node is not None and expanded_size(node, MAX_NODES) > MAX_NODES:
            raise WebhookConfigError([f"{source}: more than {MAX_NODES} values once YAML aliases are expanded"])
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise WebhookConfigError([f"{source}: not valid YAML: {exc}"]) from None
    lines = line_map(node)
    prefix: tuple[Any, ...] = ()
    if isinstance(data, Mapping) and isinstance(data.get("notifications"), Mapping):
        data, prefix = data["notifications"], ("notifications",)
    if not isinstance(data, Mapping) or "webhooks" not in data:
        raise WebhookConfigError([f"{source}: webhooks: missing (a list of webhooks)"])
    return parse_webhooks(data["webhooks"], source=source, lines=lines, prefix=(*prefix, "webhooks"))


def parse_webhooks(
    items: Any,
    *,
    source: str = "<settings>",
    lines: dict[tuple[Any, ...], int] | None = None,
    prefix: tuple[Any, ...] = ("webhooks",),
    env: Mapping[str, str] | None = None,
) -> tuple[Webhook, ...]:
    lines = lines or {}
    env = os.environ if env is None else env
    problems: list[str] = []

    def problem(path: tuple[Any, ...], message: str) -> None:
        line = line_of(lines, path)
        where = f"{source}:{line}" if line else source
        problems.append(f"{where}: {_dotted(path)}: {message}")

    if not isinstance(items, list):
        problem(prefix, "must be a list of webhooks")
        raise WebhookConfigError(problems)
    if len(items) > MAX_WEBHOOKS:
        problem(prefix, f"at most {MAX_WEBHOOKS} webhooks")
    hooks: list[Webhook] = []
    for i, item in enumerate(items[:MAX_WEBHOOKS]):
        at = (*prefix, i)
        if not isinstance(item, Mapping):
            problem(at, "must be a mapping with url, kind, secret and events")
            continue
        for unknown in sorted(set(map(str, item)) - FIELDS):
            problem((*at, unknown), f"unknown field (known: {', '.join(sorted(FIELDS))})")
        url = item.get("url")
        bad = _unusable(url) if isinstance(url, str) and len(url) <= MAX_URL else None
        if bad is not None:
            problem((*at, "url"), f"not a usable address: {bad}")
        elif not isinstance(url, str) or len(url) > MAX_URL or not _http(urlsplit(url)):
            problem((*at, "url"), f"must be an http:// or https:// address of at most {MAX_URL} characters")
        kind_raw = item.get("kind", "generic")
        kind = WebhookKind(kind_raw) if kind_raw in set(WebhookKind) else None
        if kind is None:
            problem((*at, "kind"), f"{kind_raw!r} is not one of {', '.join(WebhookKind)}")
        secret = _secret(item, at, env, problem)
        if kind is WebhookKind.GENERIC and not secret and "secret" not in item and "secret_env" not in item:
            problem((*at, "secret"), "a generic webhook signs its bodies: give secret or secret_env")
        events = _events(item.get("events", "all"), (*at, "events"), problem)
        if not problems and isinstance(url, str) and kind is not None:
            hooks.append(Webhook(url, kind, secret, events))
    if problems:
        raise WebhookConfigError(problems)
    return tuple(hooks)


def _http(parts: SplitResult) -> bool:
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _unusable(url: str) -> str | None:
    """Why httpx could not send to ``url`` (a port that is not a number or out of range, a broken
    IPv6 host...), which urlsplit alone lets through; None when it can."""
    try:
        parts = urlsplit(url)  # a broken IPv6 host
        httpx.URL(url)  # a port that is not a number, what httpx itself refuses
        parts.port  # noqa: B018 -- reading the port checks its range
    except (httpx.InvalidURL, ValueError) as exc:
        return str(exc)
    return None


def _secret(item: Mapping[str, Any], at: tuple[Any, ...], env: Mapping[str, str], problem: Any) -> str | None:
    if "secret" in item and "secret_env" in item:
        problem((*at, "secret_env"), "give secret or secret_env, not both")
        return None
    if "secret_env" in item:
        name = item["secret_env"]
        if not isinstance(name, str) or not env.get(name):
            problem((*at, "secret_env"), f"environment variable {name!r} is not set")
            return None
        field, secret, said = "secret_env", env[name], f"environment variable {name!r} holds"
    elif "secret" in item:
        given = item["secret"]
        if not isinstance(given, str) or not given:  # `secret:` alone is null
            problem((*at, "secret"), "must be a non-empty string")
            return None
        field, secret, said = "secret", given, "it has"
    else:
        return None
    size = len(secret.strip())
    if size < MIN_SECRET:  # a blank or short one is guessed: anyone could sign the controller's events
        problem(
            (*at, field),
            f"the secret of the webhook to {_host(item.get('url'))} is too short: {said} {size} "
            f"character(s), leaving out spaces; give it at least {MIN_SECRET}",
        )
        return None
    return secret


def _host(url: Any) -> str:
    """A webhook named by its host (the rest of a Slack URL is a secret)."""
    if not isinstance(url, str):
        return "(no url)"
    try:
        return urlsplit(url).hostname or "(no host)"  # no user:password@ nor port
    except ValueError:
        return "(an unusable url)"


def _events(raw: Any, at: tuple[Any, ...], problem: Any) -> frozenset[EventKind] | None:
    if raw == "all":
        return None
    if not isinstance(raw, list) or not raw:
        problem(at, f"must be 'all' or a non-empty list of: {', '.join(EventKind)}")
        return None
    kinds: set[EventKind] = set()
    for j, name in enumerate(raw):
        if name not in set(EventKind):
            problem((*at, j), f"{name!r} is not an event (known: {', '.join(EventKind)})")
        else:
            kinds.add(EventKind(name))
    return frozenset(kinds)


def _dotted(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
