"""The release engineer's commands for groups: ``canary release --group FILE``, and the group parts
of ``status``, ``why`` and ``pause|resume|abort GROUP`` (a group's name or a unique prefix of its id).

The group file is read here (members' spec files relative to it; a member without one takes its
catalog entry's default rollout, from ``--catalog``, ``CANARY_CATALOG`` or ``manifests/services``)
and sent with every member's rollout inline.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from canary.catalog import Catalog, CatalogError, load_catalog
from canary.catalog.settings import catalog_paths
from canary.controller import spec as rollout_spec
from canary.controller.group_spec import check, inline
from canary.controller.spec import Problem


def release_group(args: argparse.Namespace, call: Any, error: type[Exception]) -> int:
    path = Path(args.group)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read group {path}: {exc.strerror}") from None
    catalog = _catalog(catalog_paths(args.catalog or os.environ.get("CANARY_CATALOG", "")), error)
    group, problems = check(text, str(path), path.parent, catalog)
    if problems or group is None:
        raise error("the group is not valid:\n" + "\n".join(f"  {p.render(str(path))}" for p in problems))
    created = call(args, "POST", "/api/groups", content=inline(group))
    print(f"group {created['id']} ({created['name']}, policy {created['policy']}, promote {created['promote']}):")
    for m in created["members"]:
        after = f" after {', '.join(m['after'])}" if m["after"] else ""
        print(f"  {m['name']:<10} {m['service']} -> {m['release']}{after}")
    return 0


def _catalog(paths: Sequence[str], error: type[Exception]) -> Catalog:
    try:
        return load_catalog(paths)
    except CatalogError as exc:
        raise error(f"the catalog is wrong:\n{exc}") from None


def member_line(m: dict[str, Any]) -> str:
    r = m.get("rollout") or {}
    where = f" step {r['step']}/{r['steps']} at {r['weight']:g}%" if r.get("phase") in ("progressing", "paused") else ""
    why = m.get("why") or r.get("reason", "")
    if m["state"] == "waiting":
        why = "waits for " + ", ".join(m["after"])
    return f"    {m['name']:<10} {m['service']} -> {m['release']:<5} {m['state']:<12}{where}  {why}".rstrip()


def group_lines(call: Any, args: argparse.Namespace) -> list[str]:
    groups = [g for g in call(args, "GET", "/api/groups")["groups"] if not g["settled"]]
    lines = []
    for g in groups:
        paused = ", paused" if g["paused"] else ""
        lines.append(
            f"group {g['id'][:8]}  {g['name']}  {g['phase']}{paused}  (policy {g['policy']}, promote {g['promote']})"
        )
        lines += [member_line(m) for m in g["members"]]
    return lines


def find_group(call: Any, args: argparse.Namespace, key: str) -> dict[str, Any] | None:
    """A group by name (the latest of that name) or by a unique prefix of its id."""
    groups = call(args, "GET", "/api/groups")["groups"]
    named = [g for g in groups if g["name"] == key]
    if named:
        return dict(named[-1])
    by_id = [g for g in groups if g["id"].startswith(key)]
    return dict(by_id[0]) if len(by_id) == 1 else None


def why_group(call: Any, args: argparse.Namespace, g: dict[str, Any]) -> int:
    shown = call(args, "GET", f"/api/groups/{g['id']}")
    print(f"group {shown['id'][:8]}  {shown['name']}  {shown['phase']}  {shown['reason']}")
    for m in shown["members"]:
        print(member_line(m))
    for d in shown["decisions"]:
        who = d["member"] or "(group)"
        print(f"  {time.strftime('%H:%M:%S', time.localtime(d['at']))}  {who:<10} {d['action']}: {d['reason']}")
    return 0


def lint(text: str, path: str, alerts: dict[str, bool], catalog: Sequence[str] = ()) -> list[Problem]:
    """``canary lint``: a group (``kind: Group``, its members' spec files read beside it, the others'
    rollouts from the catalog at ``catalog``, by default ``CANARY_CATALOG`` or the shipped one) or a
    rollout spec."""
    _node, doc, _lines, refused = rollout_spec.parse(text)  # an alias bomb or deep nesting: in words
    if refused:
        return refused
    spec = doc.get("spec") if isinstance(doc, dict) else None
    kind = doc.get("kind") if isinstance(doc, dict) else None
    members = isinstance(spec, dict) and "members" in spec
    if members and kind != "Group":  # a group whose kind is misspelt: not a rollout's many errors
        return [Problem("kind", f"must be 'Group' (a document with spec.members is a group), not {kind!r}", None)]
    if kind == "Group":
        try:
            entries = load_catalog(catalog or catalog_paths(os.environ.get("CANARY_CATALOG", "")))
        except CatalogError as exc:
            return [Problem("(catalog)", f"the catalog is wrong: {exc}", None)]
        return check(text, path, Path(path).parent, entries)[1]
    return rollout_spec.check(text, path, alerts)[1]
