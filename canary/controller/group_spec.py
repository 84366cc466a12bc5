"""Group specs (``kind: Group``): several services released as one, as on 13 April.

A group names its members (service, release, optionally their own rollout spec: a file, or the
rollout's ``spec`` fields inline; without one, the catalog entry's default rollout), the order
they start in (``after:``: a member starts only once each dependency has passed a named step, or
been promoted), what a member's rollback does to the others (``policy``) and whether promotion
waits for every member (``promote``).  YAML in, a
validated :class:`GroupSpec` out, or errors naming field and line (``FILE:LINE: spec.members[1].after[0]:
no member 'importr'``), as for rollout specs (``spec``); cycles and unknown members are refused.
The JSON schema is published as ``manifests/group.schema.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from canary.controller import spec as rollout_spec
from canary.controller.spec import Problem, SpecError, _line_of, _message, _path, parse

if TYPE_CHECKING:
    from canary.catalog import Catalog

NAME = "^[a-z0-9][a-z0-9-]{0,62}$"
_AFTER = {
    "oneOf": [
        {"type": "string", "pattern": NAME, "description": "that member has been promoted"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["member", "step"],
            "properties": {
                "member": {"type": "string", "pattern": NAME},
                "step": {"type": "integer", "minimum": 1, "description": "that member has passed this step (1-based)"},
            },
        },
    ]
}
_MEMBER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["service", "release"],
    "properties": {
        "name": {"type": "string", "pattern": NAME, "description": "default: the service"},
        "service": {"type": "string", "pattern": NAME},
        "release": {"type": "string", "minLength": 1},
        "rollout": {
            "description": "its rollout: a spec file (relative to this file), or the rollout spec's `spec` fields "
            "inline (service, stable and canary come from the member); default: the catalog entry's defaults",
            "oneOf": [{"type": "string", "minLength": 1}, {"type": "object"}],
        },
        "after": {"type": "array", "items": _AFTER},
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "releasewarden group",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "releasewarden/v1"},
        "kind": {"const": "Group"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": NAME}},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["members"],
            "properties": {
                "policy": {
                    "enum": ["independent", "dependents", "all"],
                    "default": "independent",
                    "description": "what a member's rollback does: only it, it and those after it, or all",
                },
                "promote": {"enum": ["each", "together"], "default": "each"},
                "members": {"type": "array", "minItems": 1, "maxItems": 20, "items": _MEMBER},
            },
        },
    },
}


class Policy(StrEnum):
    INDEPENDENT = "independent"
    DEPENDENTS = "dependents"
    ALL = "all"


class Promote(StrEnum):
    EACH = "each"
    TOGETHER = "together"


@dataclass(frozen=True)
class After:
    member: str
    step: int | None = None  # None: once promoted


@dataclass(frozen=True)
class Member:
    name: str
    service: str
    release: str
    rollout: dict[str, Any]  # the rollout spec's `spec` fields, without service/stable/canary
    after: tuple[After, ...] = ()

    def rollout_text(self, group: str, stable: str) -> str:
        """This member's rollout spec, from its stable release now."""
        body = {**self.rollout, "service": self.service, "stable": stable, "canary": self.release}
        doc = {"apiVersion": "releasewarden/v1", "kind": "Rollout", "metadata": {"name": f"{group}-{self.name}"}}
        return yaml.safe_dump({**doc, "spec": body}, sort_keys=False)


@dataclass(frozen=True)
class GroupSpec:
    name: str
    members: tuple[Member, ...]
    policy: Policy = Policy.INDEPENDENT
    promote: Promote = Promote.EACH

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)


def _tuple(path: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path))


def _rollout_body(
    ref: Any, base: Path | None, member: dict[str, Any], catalog: Catalog | None
) -> tuple[dict[str, Any] | None, str, str]:
    """(the rollout's `spec` fields, the text it came from, its source) for a member's ``rollout``:
    inline, a file relative to ``base``, or (none given) the catalog entry's default rollout."""
    if isinstance(ref, dict):
        return dict(ref), "", ""
    if ref is None and catalog is not None:
        if member["service"] not in catalog:
            raise LookupError(f"no service {member['service']!r} in the catalog (it has: {', '.join(catalog.names)})")
        spec = catalog[member["service"]].rollout_document(str(member["release"]))["spec"]
        return {k: v for k, v in spec.items() if k not in ("service", "stable", "canary")}, "", ""
    if base is None or ref is None:
        return None, "", ""
    path = base / ref
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [Problem("(file)", "not UTF-8 text")]) from exc
    _, doc, _, refused = parse(text)
    if refused:
        raise SpecError(str(path), refused)
    body = doc.get("spec") if isinstance(doc, dict) else None
    if not isinstance(body, dict):
        raise SpecError(str(path), [Problem("spec", "a rollout file holds a `spec` mapping (see manifests/rollouts)")])
    return dict(body), text, str(path)


def check(
    text: str, source: str = "<group>", base: Path | None = None, catalog: Catalog | None = None
) -> tuple[GroupSpec | None, list[Problem]]:
    """Parse and validate a group; with ``base`` (the group file's folder) member spec files are
    read from there, and with ``catalog`` a member without ``rollout`` takes its entry's defaults
    (without either, as the API takes groups, every member's rollout must be inline)."""
    _, data, lines, refused = parse(text)
    if refused:
        return None, refused
    problems = []
    for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(data):
        at = tuple(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set(e.schema.get("properties", {})) if isinstance(e.schema, dict) else set()
            problems += [
                Problem(_path((*at, k)), "unknown field", _line_of(lines, (*at, k)))
                for k in sorted(set(e.instance) - known)
            ]
        else:
            problems.append(Problem(_path(at), _message(e), _line_of(lines, at)))
    if problems:
        return None, sorted(problems, key=lambda p: (p.line or 0, p.path))
    spec, more = _build(data, lines, base, catalog)
    return (spec if not more else None), sorted(more, key=lambda p: (p.line or 0, p.path))


def _build(
    data: dict[str, Any], lines: dict[tuple[Any, ...], int], base: Path | None, catalog: Catalog | None
) -> tuple[GroupSpec, list[Problem]]:
    s = data["spec"]
    problems: list[Problem] = []

    def problem(at: tuple[Any, ...], message: str) -> None:
        problems.append(Problem(_path(at), message, _line_of(lines, at)))

    names = [m.get("name", m["service"]) for m in s["members"]]
    promote = Promote(s.get("promote", "each"))
    members = []
    for i, m in enumerate(s["members"]):
        at = ("spec", "members", i)
        if names.index(names[i]) != i:
            problem((*at, "name"), f"{names[i]!r} is used twice")
        if [x["service"] for x in s["members"]].index(m["service"]) != i:
            problem((*at, "service"), f"{m['service']} is already a member: one rollout per service at a time")
        if catalog is not None and m["service"] in catalog:
            unknown = catalog[m["service"]].unknown_release(str(m["release"]))
            if unknown:
                problem((*at, "release"), unknown)
        after = []
        for j, a in enumerate(m.get("after", [])):
            dep = After(a, None) if isinstance(a, str) else After(a["member"], a["step"])
            if dep.member not in names:
                problem((*at, "after", j), f"no member {dep.member!r} (members: {', '.join(names)})")
            elif dep.member == names[i]:
                problem((*at, "after", j), "a member cannot wait for itself")
            elif dep.step is None and promote == Promote.TOGETHER:
                problem((*at, "after", j), "under promote: together members promote at once: wait for a step instead")
            after.append(dep)
        try:
            body, _text, where = _rollout_body(m.get("rollout"), base, m, catalog)
        except OSError as exc:
            problem((*at, "rollout"), f"cannot read the rollout spec: {exc.strerror}")
            continue
        except LookupError as exc:
            problem((*at, "service"), f"{exc.args[0]}: give the member a rollout, or the catalog an entry")
            continue
        except SpecError as exc:  # its spec file is not YAML, or too big or deep once read
            for p in exc.problems:
                problems.append(
                    Problem(f"{exc.source}:{p.line or ''} {p.path}", p.message, _line_of(lines, (*at, "rollout")))
                )
            continue
        if body is None:
            problem(
                (*at, "rollout"),
                "required here: `canary release --group FILE` fills it in (a spec file, or the catalog's defaults)",
            )
            continue
        member = Member(names[i], m["service"], str(m["release"]), body, tuple(after))
        _, sub = rollout_spec.check(member.rollout_text(data["metadata"]["name"], "(its stable release)"), "rollout")
        for p in sub:
            rest = p.path.removeprefix("spec.").removeprefix("spec")
            if where:  # a spec file: its own name and lines
                problems.append(
                    Problem(f"{where}:{p.line or ''} {p.path}", p.message, _line_of(lines, (*at, "rollout")))
                )
            else:
                inner = (*at, "rollout", *_tuple(rest))
                problems.append(Problem(_path(inner), p.message, _line_of(lines, inner)))
        members.append(member)
    group = GroupSpec(data["metadata"]["name"], tuple(members), Policy(s.get("policy", "independent")), promote)
    steps = {m.name: len(m.rollout.get("steps") or []) for m in members}
    for i, m in enumerate(members):
        for j, a in enumerate(m.after):
            if a.step is not None and a.member in steps and a.step > steps[a.member]:
                problem(("spec", "members", i, "after", j), f"{a.member} has {steps[a.member]} step(s), not {a.step}")
    if not problems:
        cycle = find_cycle(group)
        if cycle:
            problem(("spec", "members"), "the `after:` dependencies go round in a cycle: " + " -> ".join(cycle))
    return group, problems


def find_cycle(group: GroupSpec) -> list[str]:
    deps = {m.name: [a.member for a in m.after] for m in group.members}
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> list[str]:
        if state.get(n) == 1:
            return [*trail[trail.index(n) :], n]
        if state.get(n) == 2:
            return []
        state[n] = 1
        for d in deps[n]:
            found = visit(d, [*trail, n])
            if found:
                return found
        state[n] = 2
        return []

    for name in deps:
        found = visit(name, [])
        if found:
            return found
    return []


def load_group(
    text: str, source: str = "<group>", base: Path | None = None, catalog: Catalog | None = None
) -> GroupSpec:
    group, problems = check(text, source, base, catalog)
    if problems or group is None:
        raise SpecError(source, problems)
    return group


def load_stored_group(text: str, source: str) -> GroupSpec:
    """A group the store holds, checked when it was stored, perhaps by an older version whose checks
    were looser (as ``spec.load_stored_spec``): what this version refuses is logged once, and the
    group is read as stored, so that it stays readable and abortable; a member whose rollout this
    version refuses is refused when it starts, and the others go on."""

    def as_stored() -> GroupSpec:
        return _build(yaml.load(text, Loader=rollout_spec.LOADER), {}, None, None)[0]

    return rollout_spec.read_as_stored(source, lambda: load_group(text, source), as_stored)


def inline(group: GroupSpec) -> str:
    """The group as a document whose members carry their rollouts inline (what the API takes)."""
    members = []
    for m in group.members:
        after: list[Any] = [a.member if a.step is None else {"member": a.member, "step": a.step} for a in m.after]
        members.append(
            {"name": m.name, "service": m.service, "release": m.release, "rollout": m.rollout, "after": after}
        )
    spec = {"policy": group.policy.value, "promote": group.promote.value, "members": members}
    doc = {"apiVersion": "releasewarden/v1", "kind": "Group", "metadata": {"name": group.name}, "spec": spec}
    return yaml.safe_dump(doc, sort_keys=False)
