"""What the catalog's JSON schema cannot say, checked on an entry the schema accepted.

Each check yields ``(path, message)`` with ``path`` a tuple into the document (the loader turns it
into ``local.command[2]`` and a line): templates name only placeholders their field knows, a
command's executable exists, releases match their per-release commands and tags, a hook that runs
after a rollback cannot ask for one, a conservation metric has one consumer's counters to read, and
``defaults`` obey the rollout spec's own rules.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from canary.catalog import templates
from canary.catalog.model import PYTHON_NAMES, RolloutDefaults
from canary.controller.spec import _rules as rollout_rules
from core.yaml_lines import leaves

Found = Iterator[tuple[tuple[Any, ...], str]]


def entry_problems(doc: dict[str, Any], catalog_dir: Path) -> Found:
    releases = doc["releases"] if isinstance(doc["releases"], list) else None
    if releases is not None and doc["stable"] not in releases:
        yield ("stable",), f"{doc['stable']!r} is not among releases ({', '.join(releases)})"
    local = doc.get("local")
    has_db = bool(local and "database" in local)
    if local is not None:
        yield from _process(local, ("local",), releases, has_db, catalog_dir)
        if "database" in local:
            yield from _template(local["database"], ("local", "database"), templates.DATABASE)
    for i, consumer in enumerate(doc.get("consumers", [])):
        at = ("consumers", i)
        if consumer["name"] == doc["name"]:
            yield (*at, "name"), "a consumer needs a name of its own (it runs as a service of its own)"
        if [c["name"] for c in doc["consumers"]].index(consumer["name"]) != i:
            yield (*at, "name"), f"{consumer['name']!r} is used twice"
        if "local" in consumer:
            yield from _process(consumer["local"], (*at, "local"), releases, has_db, catalog_dir)
        yield from _template(consumer.get("deployment", ""), (*at, "deployment"), templates.KUBE_CONSUMER_NAME)
    yield from _conservation(doc)
    kube = doc.get("kubernetes")
    if kube is not None:
        yield from _kubernetes(kube, releases)
    names: list[str] = []
    for moment, hooks in doc.get("hooks", {}).items():
        for i, hook in enumerate(hooks):
            where = ("hooks", moment, i)
            if hook["name"] in names:
                yield (*where, "name"), f"{hook['name']!r} is used twice"
            names.append(hook["name"])
            yield from _hook(hook, moment, where, catalog_dir)
    yield from _defaults(doc.get("defaults", {}))


def _conservation(doc: dict[str, Any]) -> Found:
    """A conservation metric reads one consumer's counters: they must be there, and be one set."""
    counting = [i for i, c in enumerate(doc.get("consumers", [])) if "conservation" in c]
    for i in counting:
        at, consumer = ("consumers", i, "conservation"), doc["consumers"][i]
        if i != counting[0]:
            yield at, f"consumers[{counting[0]}] has them already: a conservation metric reads one consumer's"
        counters = consumer["conservation"]
        if counters["acknowledged"] in counters["accounted"]:
            j = counters["accounted"].index(counters["acknowledged"])
            yield (*at, "accounted", j), "is the acknowledged counter: nothing would ever count as lost"
        if "local" in consumer and "metrics_path" not in consumer["local"]:
            yield at, "needs local.metrics_path: where the consumer's process exposes these counters"
    for i, metric in enumerate(doc.get("defaults", {}).get("metrics", [])):
        if metric.get("kind") == "conservation" and not counting:
            yield ("defaults", "metrics", i, "kind"), "a conservation metric needs consumers[].conservation counters"


def _template(
    value: str, at: tuple[Any, ...], allowed: frozenset[str], *, settings: bool = False, has_db: bool = True
) -> Found:
    for message in templates.problems(value, allowed, settings_allowed=settings):
        yield at, message
    if not has_db and "db_url" in _names(value):
        yield at, "{db_url} needs local.database (the URL of the release's database)"


def _names(value: str) -> list[str]:
    try:
        return templates.placeholders(value)
    except templates.TemplateError:
        return []


def _process(
    p: dict[str, Any], at: tuple[Any, ...], releases: list[str] | None, has_db: bool, catalog_dir: Path
) -> Found:
    argvs: list[tuple[tuple[Any, ...], list[str]]] = []
    if "command" in p:
        argvs.append(((*at, "command"), p["command"]))
    if "commands" in p:
        if releases is None:
            yield (*at, "commands"), 'commands per release need a list of releases (not "any")'
        else:
            for missing in [r for r in releases if r not in p["commands"]]:
                yield (*at, "commands"), f"no command for release {missing!r}"
        for release, argv in p["commands"].items():
            if releases is not None and release not in releases:
                yield (*at, "commands", release), f"{release!r} is not among releases"
            argvs.append(((*at, "commands", release), argv))
    env_names = [n for v in p.get("environment", {}).values() for n in _names(v)]
    for where, argv in argvs:
        for i, arg in enumerate(argv):
            yield from _template(arg, (*where, i), templates.LOCAL, has_db=has_db)
        yield from _executable(argv[0], (*where, 0), p.get("working_dir"), catalog_dir)
        if "port" not in [n for a in argv for n in _names(a)] + env_names:
            yield where, "never names {port} (nor does environment): the release cannot know where to listen"
    for name, value in p.get("environment", {}).items():
        yield from _template(value, (*at, "environment", name), templates.LOCAL, settings=True, has_db=has_db)
        for secret in templates.controller_secrets(value):
            yield (*at, "environment", name), _handed_to_release(secret)
    if "working_dir" in p:
        yield from _template(p["working_dir"], (*at, "working_dir"), templates.LOCAL, has_db=has_db)


def _executable(first: str, at: tuple[Any, ...], working_dir: str | None, catalog_dir: Path) -> Found:
    """The program a command starts must exist, where that can be known before a release runs (a
    first word that names only ``{catalog_dir}``, or none)."""
    known = {"catalog_dir": str(catalog_dir)}
    if any(n not in known for n in _names(first)) or templates.problems(first, frozenset(known)):
        return
    program = templates.render(first, known)
    if program in PYTHON_NAMES:
        return
    if "/" not in program:
        if shutil.which(program) is None:
            yield at, f"executable {program!r} not found on PATH"
        return
    path = Path(program)
    if not path.is_absolute() and working_dir and not any(n not in known for n in _names(working_dir)):
        path = Path(templates.render(working_dir, known)) / path
    if not path.is_file():
        yield at, f"executable {str(path)!r} does not exist"
    elif not os.access(path, os.X_OK):
        yield at, f"{str(path)!r} is not executable (chmod +x, or start it with its interpreter)"


def _kubernetes(k: dict[str, Any], releases: list[str] | None) -> Found:
    for key in ("deployment", "service"):
        if key in k:
            yield from _template(k[key], ("kubernetes", key), templates.KUBE_NAME)
    if "tag" in k:
        yield from _template(k["tag"], ("kubernetes", "tag"), templates.KUBE_TAG)
    for release in k.get("tags", {}):
        if releases is not None and release not in releases:
            yield ("kubernetes", "tags", release), f"{release!r} is not among releases"


def _hook(hook: dict[str, Any], moment: str, at: tuple[Any, ...], catalog_dir: Path) -> Found:
    if moment == "after_rollback" and hook.get("on_failure") == "rollback":
        yield (*at, "on_failure"), "a hook after a rollback cannot roll back: hold"
    if "http" in hook:
        http = hook["http"]
        yield from _template(http["url"], (*at, "http", "url"), templates.HOOK)
        yield from _http_url(http["url"], (*at, "http", "url"))
        for name, value in http.get("headers", {}).items():
            yield from _template(value, (*at, "http", "headers", name), templates.HOOK, settings=True)
        try:
            json.dumps(http.get("json"))
        except (TypeError, ValueError):
            yield (*at, "http", "json"), "must be JSON: quote dates and times (YAML reads 2024-04-13 as a date)"
        for path, text in _strings(http.get("json"), (*at, "http", "json")):
            yield from _template(text, path, templates.HOOK)
        setting = http.get("token_setting")
        if setting is not None and setting not in templates.SETTINGS:
            yield (*at, "http", "token_setting"), f"unknown setting {setting!r}"
        if setting in templates.CONTROLLER_SECRETS:  # a hook's URL may be a release's by any name
            yield (*at, "http", "token_setting"), _handed_to_release(setting)
        for name, value in http.get("headers", {}).items():
            for secret in templates.controller_secrets(value):
                yield (*at, "http", "headers", name), _handed_to_release(secret)
    if "command" in hook:
        for i, arg in enumerate(hook["command"]):
            yield from _template(arg, (*at, "command", i), templates.HOOK)
        yield from _executable(hook["command"][0], (*at, "command", 0), hook.get("working_dir"), catalog_dir)
    for name, value in hook.get("environment", {}).items():
        yield from _template(value, (*at, "environment", name), templates.HOOK, settings=True)
    if "working_dir" in hook:
        yield from _template(hook["working_dir"], (*at, "working_dir"), templates.HOOK)


def _handed_to_release(secret: str) -> str:
    return (
        f"{{settings.{secret}}} would hand the controller's own secret to the releases, canaries included (one "
        "under judgment could command the controller): give them {settings.service_token} for their own admin "
        "endpoints, {settings.table_token} to read the route table"
    )


def _http_url(url: str, at: tuple[Any, ...]) -> Found:
    if templates.problems(url, templates.HOOK):
        return  # reported already
    stand_in = {n: "http://127.0.0.1:1" if n.endswith("_url") else "x" for n in templates.HOOK}
    if not templates.render(url, stand_in).startswith(("http://", "https://")):
        yield at, "must be an http:// or https:// URL (or start with {stable_url} or {canary_url})"


def _strings(value: Any, at: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    return ((path, leaf) for path, leaf in leaves(value, at) if isinstance(leaf, str))


DEFAULT_STEPS = [dataclasses.asdict(s) for s in RolloutDefaults().steps]
DEFAULT_METRICS = [dataclasses.asdict(m) for m in RolloutDefaults().metrics]


def _defaults(d: dict[str, Any]) -> Found:
    """The rollout spec's rules, on the spec these defaults make (its releases stand in)."""
    spec = {"stable": "stable", "canary": "canary", "steps": DEFAULT_STEPS, "metrics": DEFAULT_METRICS, **d}
    for path, message, where in rollout_rules(spec):
        field = path.rsplit(".", 1)[-1]
        missing = () if field in where or "[" in field else (field,)  # a field that is required, not there
        yield ("defaults", *where[1:], *missing), message
