"""Templates in catalog entries: ``{release}``-style placeholders, checked at load, filled at use.

A template is a string with placeholders in braces (``{port}``, ``{settings.admin_token}``); ``{{``
and ``}}`` stand for literal braces.  Which placeholders a field may name depends on where it is
used (:data:`LOCAL`, :data:`KUBE_NAME`, :data:`HOOK`, ...): the loader refuses an unknown one at
load, so a typo (``{prot}``) never reaches a running rollout.  ``{settings.NAME}`` is a setting of
the process that fills the template; it is allowed only where it stays out of a command line
(environment values, HTTP headers), since a command line is visible to every user of the machine.
The service and table tokens fill in as the entry's own service's (``core.scoped_tokens``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from core.scoped_tokens import setting_value
from core.settings import Settings

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
SETTING_PREFIX = "settings."
SETTINGS = frozenset(f.name for f in dataclasses.fields(Settings))

# What each kind of field may name.  Local processes: the release and where it runs.
LOCAL = frozenset({"service", "release", "port", "state_dir", "db_url", "track", "route_table", "catalog_dir"})
DATABASE = frozenset({"service", "state_dir"})  # local.database: the release's database URL
KUBE_NAME = frozenset({"service", "track"})  # Deployment, Service names
KUBE_CONSUMER_NAME = frozenset({"service", "consumer", "track"})
KUBE_TAG = frozenset({"release"})
# Hooks: the rollout at the moment the hook runs
HOOK = frozenset({"service", "stable", "canary", "stable_url", "canary_url", "rollout_id", "moment", "catalog_dir"})
# The controller's own secrets: never handed to a release (with the admin token a canary could
# promote itself, with the database URL write its own rollout's phase), nor sent by a hook
CONTROLLER_SECRETS = frozenset({"admin_token", "alert_token", "read_token", "db_url"})


class TemplateError(ValueError):
    """A template that cannot be parsed or names a placeholder its field does not know."""


def placeholders(template: str) -> list[str]:
    """The names a template uses, in order; a stray brace is an error."""
    names = []
    for m in _TOKEN.finditer(template):
        token = m.group(0)
        if token in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise TemplateError(f"stray {token!r} in {template!r} (write {token * 2} for a literal brace)")
        names.append(m.group(1).strip())
    return names


def problems(template: str, allowed: frozenset[str], *, settings_allowed: bool = False) -> list[str]:
    """Why ``template`` is not valid where ``allowed`` placeholders are known (empty: it is)."""
    try:
        names = placeholders(template)
    except TemplateError as exc:
        return [str(exc)]
    out = []
    for name in names:
        if name.startswith(SETTING_PREFIX):
            setting = name[len(SETTING_PREFIX) :]
            if not settings_allowed:
                out.append(
                    f"{{{name}}}: a setting may not appear here (a command line is visible to every user; "
                    "pass it in environment)"
                )
            elif setting not in SETTINGS:
                out.append(f"unknown setting {{{name}}}")
        elif name not in allowed:
            out.append(f"unknown placeholder {{{name}}} (known: {', '.join(sorted(allowed))})")
    return out


def controller_secrets(template: str) -> list[str]:
    """The settings among :data:`CONTROLLER_SECRETS` that ``template`` names."""
    try:
        names = placeholders(template)
    except TemplateError:
        return []
    return [n[len(SETTING_PREFIX) :] for n in names if n[len(SETTING_PREFIX) :] in CONTROLLER_SECRETS]


def render(template: str, values: Mapping[str, str], settings: Settings | None = None) -> str:
    """Fill ``template``; a placeholder without a value is a :class:`TemplateError` (the loader has
    checked names already, so this means a caller passed too little)."""

    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = (m.group(1) or "").strip()
        if name.startswith(SETTING_PREFIX) and settings is not None:
            try:
                return setting_value(settings, name[len(SETTING_PREFIX) :], values.get("service", ""))
            except ValueError as exc:
                raise TemplateError(f"{exc} in {template!r}") from None
        if m.group(1) is None or name not in values:
            raise TemplateError(f"no value for {token!r} in {template!r}")
        return values[name]

    return _TOKEN.sub(one, template)
