"""Rollout specs: YAML in, a validated :class:`RolloutSpec` out, or errors that name field and line.

Validation is the JSON schema of ``spec_schema`` (also published for editors) plus the rules a
schema cannot say (steps' weights rise; stable and canary differ; a latency metric has a threshold;
a query metric has both queries).  Each error reads ``FILE:LINE: spec.steps[2].weight: must be
between 0 and 100``.  Bad specs never reach the state machine: ``load_spec`` raises ``SpecError``.

:func:`parse` is how every spec and group is read (the API, ``canary lint``): a document that
expands past ``MAX_NODES`` values through its aliases (a few hundred bytes of nested aliases are
billions), or nests deeper than ``MAX_DEPTH``, is refused before anything walks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from canary.controller.spec_schema import DEFAULT_STICKY, SCHEMA
from core.errors import ConfigError
from core.yaml_lines import MAX_NODES, duplicate_keys, expanded_size, non_finite_numbers

log = logging.getLogger("releasewarden.controller")
T = TypeVar("T")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where installed: 10x faster
MAX_DEPTH = 32  # levels of mappings and lists: a spec needs 5, a group 7


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.path}: {self.message}"


class SpecError(ConfigError):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


@dataclass(frozen=True)
class Step:
    weight: float
    min_requests: int = 100
    min_seconds: float = 30.0
    max_seconds: float = 900.0


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    alpha: float = 0.01
    min_regression: float = 2.0
    rate_floor: float = 0.001
    threshold_ms: float | None = None
    objective: float | None = None
    tolerance: float = 0.0
    events_query: str | None = None
    bad_query: str | None = None


class OnInconclusive(StrEnum):
    """What a step (or the mirror phase) that reaches its time limit without a verdict does."""

    PAUSE = "pause"  # the default: a person decides (resume, promote or abort)
    ROLLBACK = "rollback"
    PROMOTE = "promote"


class MirrorBaseline(StrEnum):
    """What the canary's mirrored answers are judged against."""

    NONE = "none"  # max_different_share (or a `baseline` upstream's noise, where a table has one)
    STABLE = "stable"  # stable asked a second time: the differences between its two answers (noise)


@dataclass(frozen=True)
class MirrorSpec:
    share: float = 1.0  # of safe requests, also sent to the canary and compared
    min_seconds: float = 30.0
    min_compared: int = 100
    max_seconds: float = 600.0
    ignore_fields: tuple[str, ...] = ()
    pixel_tolerance: float = 8.0
    max_different_share: float = 0.0
    baseline: MirrorBaseline = MirrorBaseline.NONE


NO_STICKY = "none"  # `sticky: none`: each request is drawn by itself, and judged so


def sticky_fields(raw: str | dict[str, Any]) -> dict[str, Any]:
    """A spec's ``sticky`` (as checked by the schema) as fields: none is no key, ``{}``."""
    return dict(raw) if isinstance(raw, dict) else {}


@dataclass(frozen=True)
class RolloutSpec:
    name: str
    service: str
    stable: str
    canary: str
    steps: tuple[Step, ...]
    metrics: tuple[Metric, ...]
    mirror: MirrorSpec | None = None
    failover: bool = True
    sticky: dict[str, Any] = field(default_factory=dict)  # empty: per request (``sticky: none``)
    alerts: tuple[str, ...] = ()  # the alerts that roll this rollout back (none listed: any about its canary)
    watch_seconds: float = 600.0
    watch_holdback: float = 0.0  # percent of traffic the old release keeps during the watch

    @property
    def history_seconds(self) -> float:
        """``sticky.history_seconds``: at most this long in pending for the bucket groups' history."""
        return float(self.sticky.get("history_seconds", 0.0))

    on_inconclusive: OnInconclusive = OnInconclusive.PAUSE


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def _message(error: jsonschema.ValidationError) -> str:
    schema, v = error.schema if isinstance(error.schema, dict) else {}, error.validator
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        exclusive = {"exclusiveMinimum", "exclusiveMaximum"} & set(schema)
        if lo is not None and hi is not None and not exclusive:
            return f"must be between {lo:g} and {hi:g}"
        above = [] if lo is None else [f"{'above' if 'exclusiveMinimum' in schema else 'at least'} {lo:g}"]
        below = [] if hi is None else [f"{'below' if 'exclusiveMaximum' in schema else 'at most'} {hi:g}"]
        return "must be " + " and ".join(above + below)
    if v == "required":
        return str(error.message).replace(" is a required property", ": required")
    if v == "enum":
        return f"must be one of {', '.join(map(str, error.validator_value))}"
    if v == "const":
        return f"must be {error.validator_value!r}"
    if v == "type":
        return f"must be {'an' if str(error.validator_value)[0] in 'aeiou' else 'a'} {error.validator_value}"
    if v == "oneOf" and "description" in schema:
        return f"needs {schema['description']}"
    if v == "minItems":
        return f"needs at least {error.validator_value} item(s)"
    return str(error.message)


def _lines(node: yaml.Node | None, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Each path in the YAML document -> the line (1-based) where its value starts (a mapping's
    value: where its key starts).  It walks aliases as the expanded tree: bound its size first."""
    out: dict[tuple[Any, ...], int] = {}
    if node is None:
        return out
    stack: list[tuple[tuple[Any, ...], yaml.Node, int]] = [(prefix, node, node.start_mark.line + 1)]
    while stack:  # depth first, in document order: of two equal keys the later one's lines stay
        at, n, line = stack.pop()
        out[at] = line
        if isinstance(n, yaml.MappingNode):
            stack.extend(((*at, k.value), v, k.start_mark.line + 1) for k, v in reversed(n.value))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(((*at, i), v, v.start_mark.line + 1) for i, v in reversed(list(enumerate(n.value))))
    return out


def parse(text: str) -> tuple[yaml.Node | None, Any, dict[tuple[Any, ...], int], list[Problem]]:
    """(node, data, lines, problems): one YAML document read once, or the problem that refuses it
    (not YAML; more than ``MAX_NODES`` values once its aliases are expanded, counted before they
    are; nested deeper than ``MAX_DEPTH``; a key given twice; ``.nan`` or ``.inf`` anywhere).
    Problems name the document's line where they can."""
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        if node is not None and expanded_size(node, MAX_NODES) > MAX_NODES:
            message = f"more than {MAX_NODES} values once YAML aliases are expanded"
            return None, None, {}, [Problem("(document)", message)]
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        last = max(1, len(text.rstrip().splitlines()))  # libyaml marks an unclosed bracket past the end
        line = min(mark.line + 1, last) if mark else None
        return None, None, {}, [Problem("(document)", f"not valid YAML: {getattr(exc, 'problem', exc)}", line)]
    except RecursionError:  # the pure-Python parser (no libyaml) recurses per level
        return None, None, {}, [Problem("(document)", f"nested deeper than {MAX_DEPTH} levels", None)]
    finally:
        loader.dispose()
    lines = _lines(node)
    deepest = max(lines, key=len, default=())
    if len(deepest) > MAX_DEPTH:
        at = deepest[: MAX_DEPTH + 1]
        return None, None, {}, [Problem(_path(at), f"nested deeper than {MAX_DEPTH} levels", lines.get(at))]
    refused = [*(duplicate_keys(node) if node is not None else ()), *non_finite_numbers(data)]
    if refused:
        return None, None, {}, [Problem(_path(p), m, _line_of(lines, p)) for p, m in refused]
    return node, data, lines, []


def _line_of(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def rule_alerts(rules_dir: Path) -> dict[str, bool]:
    """Alert name -> whether it is routed to the controller (label ``rollback: "true"``), from the
    Prometheus rule files ``*.alerts.yml`` in ``rules_dir``."""
    out: dict[str, bool] = {}
    for path in sorted(rules_dir.glob("*.alerts.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    out[str(rule["alert"])] = str((rule.get("labels") or {}).get("rollback", "")) == "true"
    return out


def _alert_problems(spec: dict[str, Any], lines: dict[tuple[Any, ...], int], known: dict[str, bool]) -> list[Problem]:
    out = []
    for i, name in enumerate(spec.get("alerts", [])):
        at = ("spec", "alerts", i)
        if name not in known:
            choices = ", ".join(sorted(n for n, rolls_back in known.items() if rolls_back))
            out.append(
                Problem(
                    _path(at), f"no alert {name!r} in the rules (alerts that roll back: {choices})", _line_of(lines, at)
                )
            )
        elif not known[name]:
            out.append(
                Problem(
                    _path(at),
                    f'alert {name!r} is not labelled rollback="true": it never reaches the controller',
                    _line_of(lines, at),
                )
            )
    return out


def check(
    text: str, source: str = "<spec>", alerts: dict[str, bool] | None = None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Parse and validate; (document, problems) with problems sorted by line.  With ``alerts``
    (from :func:`rule_alerts`), every alert the spec names must be one that rolls back."""
    _, data, lines, refused = parse(text)
    if refused:
        return None, refused
    validator = jsonschema.Draft202012Validator(SCHEMA)
    problems = []
    for e in (leaf for top in validator.iter_errors(data) for leaf in _within_branch(top)):
        path = tuple(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set(e.schema.get("properties", {})) if isinstance(e.schema, dict) else set()
            for key in sorted(set(e.instance) - known):  # name each unknown field at its own line
                problems.append(Problem(_path((*path, key)), "unknown field", _line_of(lines, (*path, key))))
            continue
        problems.append(Problem(_path(path), _message(e), _line_of(lines, path)))
    if not problems and isinstance(data, dict):
        problems = [Problem(p, m, _line_of(lines, k)) for p, m, k in _rules(data["spec"])]
        if alerts is not None:
            problems += _alert_problems(data["spec"], lines, alerts)
    return data, sorted(problems, key=lambda p: (p.line or 0, p.path))


def _within_branch(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """A mapping refused by a ``oneOf`` of a word and a mapping (``sticky: none`` or ``{header: ...}``)
    is refused for what is wrong inside the mapping's branch (``history_seconds`` over its maximum),
    not for matching neither."""
    branches = error.validator_value if error.validator == "oneOf" else None
    if not isinstance(branches, list) or not isinstance(error.instance, dict):
        return [error]
    mapping = [i for i, b in enumerate(branches) if isinstance(b, dict) and b.get("type") == "object"]
    if len(mapping) != 1:
        return [error]
    inside = [c for c in error.context or () if c.relative_schema_path[0] == mapping[0]]
    return [leaf for c in inside for leaf in _within_branch(c)] or [error]


def _rules(spec: dict[str, Any]) -> list[tuple[str, str, tuple[Any, ...]]]:
    out: list[tuple[str, str, tuple[Any, ...]]] = []
    if spec["stable"] == spec["canary"]:
        out.append(("spec.canary", "must differ from spec.stable", ("spec", "canary")))
    weights = [s["weight"] for s in spec["steps"]]
    for i in range(1, len(weights)):
        if weights[i] <= weights[i - 1]:
            out.append(
                (
                    f"spec.steps[{i}].weight",
                    f"must be above the previous step's {weights[i - 1]:g}",
                    ("spec", "steps", i, "weight"),
                )
            )
    phases: list[tuple[tuple[Any, ...], dict[str, Any], Step | MirrorSpec]]
    phases = [(("spec", "steps", i), step, Step(0)) for i, step in enumerate(spec["steps"])]
    phases += [(("spec", "mirror"), spec["mirror"], MirrorSpec())] if "mirror" in spec else []
    for at, phase, defaults in phases:
        shortest = phase.get("min_seconds", defaults.min_seconds)
        longest = phase.get("max_seconds", defaults.max_seconds)
        if shortest > longest:
            out.append(
                (
                    f"{_path(at)}.min_seconds",
                    f"{shortest:g} is longer than max_seconds ({longest:g}): the phase could never pass",
                    (*at, "min_seconds"),
                )
            )
    for i, m in enumerate(spec["metrics"]):
        if m["kind"] == "latency" and "threshold_ms" not in m:
            out.append((f"spec.metrics[{i}].threshold_ms", "required for a latency metric", ("spec", "metrics", i)))
        if m["kind"] == "conservation" and m.get("tolerance", 0) > 0:
            out.append(
                (
                    f"spec.metrics[{i}].tolerance",
                    "a conservation metric counts lost data: it has no tolerance",
                    ("spec", "metrics", i, "tolerance"),
                )
            )
        if m["kind"] == "query" and not ("events_query" in m and "bad_query" in m):
            out.append(
                (f"spec.metrics[{i}]", "a query metric needs events_query and bad_query", ("spec", "metrics", i))
            )
    names = [m["name"] for m in spec["metrics"]]
    for i, n in enumerate(names):
        if names.index(n) != i:
            out.append((f"spec.metrics[{i}].name", f"{n!r} is used twice", ("spec", "metrics", i, "name")))
    return out


def load_spec(text: str, source: str = "<spec>") -> RolloutSpec:
    data, problems = check(text, source)
    if problems or data is None:
        raise SpecError(source, problems)
    return _build(data)


def load_stored_spec(text: str, source: str) -> RolloutSpec:
    """A spec the store holds: checked when it was stored, perhaps by an older version whose checks
    were looser (a step at 100%, a key given twice).  What this version refuses is logged once, and
    the spec is read as it was stored: an active rollout must stay readable, abortable and able to
    end, or every tick and every listing would fail on it."""
    return read_as_stored(source, lambda: load_spec(text, source), lambda: _build(yaml.load(text, Loader=LOADER)))


def read_as_stored(source: str, checked: Callable[[], T], as_stored: Callable[[], T]) -> T:
    """``checked()``, or, when this version refuses what the store holds, ``as_stored()`` (logged
    once per ``source``): for what an older version with looser checks stored."""
    try:
        return checked()
    except SpecError as exc:
        if source not in _WARNED:
            _WARNED.add(source)
            log.warning("%s: its stored spec is one this version refuses (read as stored; abort it): %s", source, exc)
        return as_stored()


_WARNED: set[str] = set()


def _build(data: dict[str, Any]) -> RolloutSpec:
    s = data["spec"]
    return RolloutSpec(
        name=str(data.get("metadata", {}).get("name") or f"{s['service']}-{s['canary']}"),
        service=s["service"],
        stable=s["stable"],
        canary=s["canary"],
        steps=tuple(Step(**step) for step in s["steps"]),
        metrics=tuple(Metric(**m) for m in s["metrics"]),
        mirror=_mirror(s["mirror"]) if "mirror" in s else None,
        failover=s.get("failover", True),
        sticky=sticky_fields(s.get("sticky", DEFAULT_STICKY)),
        alerts=tuple(s.get("alerts", [])),
        watch_seconds=float(s.get("watch", {}).get("seconds", 600)),
        watch_holdback=float(s.get("watch", {}).get("holdback", 0)),
        on_inconclusive=OnInconclusive(s.get("on_inconclusive", "pause")),
    )


def _mirror(m: dict[str, Any]) -> MirrorSpec:
    return MirrorSpec(
        **{
            **m,
            "ignore_fields": tuple(m.get("ignore_fields", ())),
            "baseline": MirrorBaseline(m.get("baseline", MirrorBaseline.NONE)),
        }
    )
