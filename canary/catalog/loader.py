"""Catalog files in, a :class:`Catalog` out, or problems that name file, field and line.

A catalog is one or more paths: a YAML file holds one entry (one document), a directory holds the
``*.yaml``/``*.yml`` files directly in it.  Each file is checked against the published schema
(``catalog.schema``), then by ``catalog.checks``; across files, service and consumer names must be
unique.  Every problem reads ``manifests/services/x.yaml:7: local.command[5]: unknown placeholder
{prot} (known: ...)``.  :func:`lint_catalog` returns them (``canary lint``); :func:`load_catalog`
raises :class:`CatalogError` with all of them, so nothing half-checked reaches a platform.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from canary.catalog import checks, model
from canary.catalog.entry import Catalog, ServiceEntry
from canary.catalog.schema import SCHEMA
from canary.controller.spec import Metric, Step, _line_of, _lines, _message, _path, sticky_fields
from canary.providers.base import ConservationCounters
from core.errors import ConfigError
from core.yaml_lines import MAX_NODES, duplicate_keys, expanded_size, non_finite_numbers

MAX_FILE_BYTES = 1 << 20
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where installed: 10x faster
SUFFIXES = (".yaml", ".yml")
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@dataclasses.dataclass(frozen=True)
class Problem:
    file: str
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


class CatalogError(ConfigError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def catalog_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """The entries' files: each file named, and every YAML file of each directory named, but for
    the rollout specs and groups kept beside the entries (``specs_beside``)."""
    files, problems = [], []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            beside = set(specs_beside(p))
            found = sorted(f for f in p.iterdir() if f.suffix in SUFFIXES and f.is_file() and f not in beside)
            if not found:
                problems.append(Problem(str(p), "(catalog)", "no *.yaml catalog entries in this directory"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Problem(str(p), "(catalog)", "no such file or directory"))
    return files, problems


TOP_LEVEL_KIND = re.compile(r"^kind:\s*[\"']?(\w+)[\"']?\s*(?:#.*)?$", re.MULTILINE)


def top_level_kinds(text: str) -> set[str]:
    """The ``kind:`` values a YAML document names at its top level, read without parsing it (a
    catalog entry is ``Service``; a rollout spec ``Rollout``; a group ``Group``)."""
    return set(TOP_LEVEL_KIND.findall(text))


def specs_beside(directory: Path) -> list[Path]:
    """The YAML files of a catalog directory that are rollout specs or groups (a top-level
    ``kind: Rollout`` or ``kind: Group``): kept beside the entries, they are not entries."""
    out = []
    for f in sorted(directory.iterdir()):
        if f.suffix not in SUFFIXES or not f.is_file():
            continue
        try:
            with f.open("rb") as opened:
                head = opened.read(MAX_FILE_BYTES).decode("utf-8", errors="replace")
        except OSError:
            continue  # check_file names it
        if top_level_kinds(head) & {"Rollout", "Group"}:
            out.append(f)
    return out


def check_file(path: Path) -> tuple[ServiceEntry | None, list[Problem]]:
    """One catalog file: its entry if it is valid, else the problems (sorted by line)."""
    source = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, [Problem(source, "(file)", f"cannot read: {exc.strerror}")]
    if len(raw) > MAX_FILE_BYTES:
        return None, [Problem(source, "(file)", f"larger than {MAX_FILE_BYTES} bytes")]
    try:
        text = raw.decode("utf-8")
        nodes = list(yaml.compose_all(text, Loader=LOADER))
        if not nodes:
            return None, [Problem(source, "(document)", "empty: a catalog entry is one YAML document")]
        if len(nodes) != 1:
            return None, [Problem(source, "(document)", f"one service per file: found {len(nodes)} documents")]
        data = yaml.load(text, Loader=LOADER)
    except UnicodeDecodeError:
        return None, [Problem(source, "(file)", "not UTF-8 text")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        message = f"not valid YAML: {getattr(exc, 'problem', None) or exc}"
        return None, [Problem(source, "(document)", message, mark.line + 1 if mark else None)]
    if expanded_size(nodes[0], MAX_NODES) > MAX_NODES:
        return None, [Problem(source, "(document)", f"more than {MAX_NODES} values once YAML aliases are expanded")]
    lines = _lines(nodes[0])
    refused = [*duplicate_keys(nodes[0]), *non_finite_numbers(data)]
    found = [Problem(source, _path(p), m, _line_of(lines, p)) for p, m in refused]
    found += [Problem(source, _path(p), m, _line_of(lines, p)) for p, m in _schema_problems(data, lines)]
    if not found and isinstance(data, dict):
        at = [(p, m) for p, m in checks.entry_problems(data, path.resolve().parent)]
        found = [Problem(source, _path(p), m, _line_of(lines, p)) for p, m in at]
    if found:
        return None, sorted(found, key=lambda p: (p.line or 0, p.field))
    return build_entry(data, path), []


def _schema_problems(data: Any, lines: dict[tuple[Any, ...], int]) -> Iterator[tuple[tuple[Any, ...], str]]:
    for e in _VALIDATOR.iter_errors(data):
        path = tuple(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set(e.schema.get("properties", {})) if isinstance(e.schema, dict) else set()
            for key in sorted(set(e.instance) - known):
                yield (*path, key), "unknown field"
            continue
        if e.validator in ("oneOf", "anyOf"):
            options = [s.get("required", [None])[0] for s in e.validator_value if set(s) == {"required"}]
            if len(options) == len(e.validator_value):
                how = "exactly one of" if e.validator == "oneOf" else "at least one of"
                yield path, f"needs {how} {' or '.join(options)}"
                continue
            shaped = _matching_branch(e)
            if not shaped:
                yield path, f"must be {e.schema.get('description', 'one of the allowed forms')}"
                continue
            for sub in shaped:
                yield tuple(sub.absolute_path), _hinted(sub)
            continue
        yield path, _hinted(e)


def _matching_branch(e: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors of the alternative whose shape (type) the value has: "releases[0]: must be a
    string", not "releases: must be 'any'"."""
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in e.context or []:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    for errors in branches.values():
        if not any(not s.relative_path and s.validator in ("type", "const", "enum") for s in errors):
            return errors
    return []


def _hinted(e: jsonschema.ValidationError) -> str:
    if e.validator == "type" and e.validator_value == "string" and isinstance(e.instance, int | float):
        return 'must be a string: quote it ("1.10"), YAML reads 1.10 as the number 1.1'
    if e.validator == "pattern" and isinstance(e.schema, dict) and "description" in e.schema:
        return f"{e.instance!r} does not match {e.validator_value} ({e.schema['description']})"
    return _message(e)


def build_entry(d: dict[str, Any], source: Path) -> ServiceEntry:
    """The typed entry of a document the schema and the checks accepted."""
    local = d.get("local")
    return ServiceEntry(
        name=d["name"],
        stable=d["stable"],
        releases=tuple(d["releases"]) if isinstance(d["releases"], list) else None,
        source=source,
        local=model.LocalRun(_process(local), local.get("database")) if local else None,
        kubernetes=_kube(d["kubernetes"]) if "kubernetes" in d else None,
        consumers=tuple(_consumer(c) for c in d.get("consumers", [])),
        hooks=tuple(_hook(h, moment) for moment, hooks in d.get("hooks", {}).items() for h in hooks),
        defaults=_defaults(d.get("defaults", {})),
    )


def _consumer(c: dict[str, Any]) -> model.Consumer:
    local = _process(c["local"]) if "local" in c else None
    counted = c.get("conservation")
    conservation = None
    if counted is not None:
        metrics_path = local.metrics_path if local is not None and local.metrics_path else "/metrics"
        conservation = ConservationCounters(
            c["name"], counted["acknowledged"], tuple(counted["accounted"]), metrics_path
        )
    return model.Consumer(c["name"], local, c.get("deployment", model.Consumer.deployment), conservation)


def _process(p: dict[str, Any]) -> model.ProcessTemplate:
    health = p.get("health_path", "/healthz")
    return model.ProcessTemplate(
        command=tuple(p["command"]) if "command" in p else None,
        commands={r: tuple(argv) for r, argv in p.get("commands", {}).items()},
        environment=dict(p.get("environment", {})),
        working_dir=p.get("working_dir"),
        health_path=health,
        ready_path=p.get("ready_path", health),
        ready_timeout_s=float(p.get("ready_timeout_s", 30)),
        metrics_path=p.get("metrics_path"),
    )


def _kube(k: dict[str, Any]) -> model.KubeRun:
    base = model.KubeRun()
    return model.KubeRun(
        deployment=k.get("deployment", base.deployment),
        deployments=dict(k.get("deployments", {})),
        image=k.get("image"),
        tag=k.get("tag", base.tag),
        tags=dict(k.get("tags", {})),
        port=int(k.get("port", base.port)),
        service=k.get("service", base.service),
        httproute=k.get("httproute"),
    )


def _hook(h: dict[str, Any], moment: str) -> model.Hook:
    action: model.HttpCall | model.CommandCall
    if "http" in h:
        x = h["http"]
        action = model.HttpCall(
            x.get("method", "POST"), x["url"], dict(x.get("headers", {})), x.get("json"), x.get("token_setting")
        )
    else:
        action = model.CommandCall(tuple(h["command"]), dict(h.get("environment", {})), h.get("working_dir"))
    return model.Hook(
        h["name"],
        model.Moment(moment),
        action,
        float(h.get("timeout_s", 10)),
        model.OnFailure(h.get("on_failure", "hold")),
    )


def _defaults(d: dict[str, Any]) -> model.RolloutDefaults:
    base = model.RolloutDefaults()
    return model.RolloutDefaults(
        steps=tuple(Step(**s) for s in d["steps"]) if "steps" in d else base.steps,
        metrics=tuple(Metric(**m) for m in d["metrics"]) if "metrics" in d else base.metrics,
        mirror=d.get("mirror"),
        failover=d.get("failover", True),
        sticky=sticky_fields(d["sticky"]) if "sticky" in d else base.sticky,
        alerts=tuple(d.get("alerts", [])),
        watch_seconds=float(d.get("watch", {}).get("seconds", base.watch_seconds)),
        watch_holdback=float(d.get("watch", {}).get("holdback", base.watch_holdback)),
        on_inconclusive=d.get("on_inconclusive"),
    )


def lint_catalog(paths: Iterable[str | Path]) -> list[Problem]:
    """Every problem of the catalog at ``paths`` (empty: it loads)."""
    return _load(paths)[1]


def load_catalog(paths: Iterable[str | Path]) -> Catalog:
    catalog, problems = _load(paths)
    if problems:
        raise CatalogError(problems)
    return catalog


def _load(paths: Iterable[str | Path]) -> tuple[Catalog, list[Problem]]:
    files, problems = catalog_files(paths)
    entries: dict[str, ServiceEntry] = {}
    runs_as: dict[str, str] = {}  # platform name (service or consumer) -> the file that defines it
    for path in files:
        entry, found = check_file(path)
        problems += found
        if entry is None:
            continue
        clash = [n for n in (entry.name, *(c.name for c in entry.consumers)) if n in runs_as]
        if clash:
            problems += [Problem(str(path), "name", f"{n!r} is already defined in {runs_as[n]}") for n in clash]
            continue
        runs_as.update({n: str(path) for n in (entry.name, *(c.name for c in entry.consumers))})
        entries[entry.name] = entry
    return Catalog(entries), problems
