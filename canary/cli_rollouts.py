"""The release engineer's commands: release, status, pause/resume/promote/abort, reprocess, history, why
(and their group parts, in ``cli_groups``).

They talk to the controller's API (``--controller``, default http://127.0.0.1:8700) with the token
from ``CANARY_ADMIN_TOKEN`` or the state directory that ``canary up`` wrote.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from canary import cli_groups
from canary.catalog import CatalogError, load_catalog
from canary.catalog.settings import catalog_paths
from canary.controller.spec import parse
from canary.stack import admin_token
from core.errors import ReleaseWardenError


class CommandError(ReleaseWardenError):
    pass


def _client(args: argparse.Namespace) -> httpx.Client:
    token = admin_token(Path(args.state_dir))
    return httpx.Client(base_url=args.controller, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    try:
        with _client(args) as client:
            r = client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise CommandError(
            f"controller at {args.controller} did not answer ({type(exc).__name__}); is `canary up` running?"
        ) from None
    if r.status_code >= 400:
        error = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
        detail = error.get("detail")
        lines = "\n".join(f"  {d}" for d in detail) if isinstance(detail, list) else ""
        raise CommandError(f"{error.get('message', r.text)}" + (f"\n{lines}" if lines else ""))
    return r.json()


def release(args: argparse.Namespace) -> int:
    """A rollout from the catalog entry's defaults; a spec file (``--spec``) overrides its fields."""
    if args.group:
        return cli_groups.release_group(args, _call, CommandError)
    if not args.service or not args.to:
        raise CommandError("canary release SERVICE --to RELEASE, or canary release --group FILE")
    try:
        catalog = load_catalog(catalog_paths(args.catalog or os.environ.get("CANARY_CATALOG", "")))
        entry = catalog[args.service]
    except CatalogError as exc:
        raise CommandError(f"the catalog is wrong:\n{exc}") from None
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    unknown = entry.unknown_release(args.to)
    if unknown:
        raise CommandError(unknown)
    doc = entry.rollout_document(args.to)
    given: dict[str, Any] = {}
    if args.spec:
        try:
            _node, given, _lines, refused = parse(Path(args.spec).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"cannot read spec {args.spec}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{args.spec}: not UTF-8 text") from None
        if refused:
            raise CommandError(refused[0].render(args.spec))
        if not isinstance(given, dict) or not isinstance(given.get("spec") or {}, dict):
            raise CommandError(f"{args.spec}: a rollout spec is a mapping (apiVersion, kind, spec: a mapping)")
        doc = {**doc, **{k: v for k, v in given.items() if k != "spec"}}
        doc["spec"] = {**doc["spec"], **(given.get("spec") or {})}
        _spec_agrees(args.spec, given.get("spec") or {}, {"service": args.service, "canary": args.to})
    table = _call(args, "GET", "/api/routes")
    current = table["services"].get(args.service, {}).get("releases", {}).get("stable")
    if current is None:
        raise CommandError(f"{args.service} is not running under the controller")
    if args.spec:
        _spec_agrees(args.spec, given.get("spec") or {}, {"stable": current})
    doc["spec"].update({"service": args.service, "stable": current, "canary": args.to})
    doc.setdefault("metadata", {})["name"] = f"{args.service}-{args.to}"
    created = _call(args, "POST", "/api/rollouts", content=yaml.safe_dump(doc, sort_keys=False))
    print(f"rollout {created['id']}: {args.service} {current} -> {args.to} ({created['phase']})")
    return 0


def _spec_agrees(path: str, given: dict[str, Any], releasing: dict[str, str]) -> None:
    """A spec file's service and releases, where it names them, are the ones being released: one
    written for another service, or another release, is refused rather than half applied."""
    said = {"service": "the service", "stable": "the controller's stable release", "canary": "--to"}
    for field, value in releasing.items():
        if field in given and not isinstance(given[field], str):  # 1.10 unquoted is YAML's 1.1
            raise CommandError(f"{path}: spec.{field}: must be a string (quote it: YAML read {given[field]!r})")
        if field in given and given[field] != value:
            raise CommandError(
                f"{path}: spec.{field} is {given[field]!r}, but {said[field]} is {value!r}"
                " (leave it out to take it from the command)"
            )


def _status_lines(args: argparse.Namespace) -> list[str]:
    rollouts = _call(args, "GET", "/api/rollouts")["rollouts"]
    active = [r for r in rollouts if r["phase"] not in ("succeeded", "rolled_back", "failed")]
    lines = cli_groups.group_lines(_call, args)
    if not active:
        return [*lines, "no active rollout" + (f"; last: {_one_line(rollouts[-1])}" if rollouts else "")]
    for r in active:
        lines.append(_one_line(r) + f"  ({time.time() - r['phase_since']:.0f} s in phase)")
        detail = _call(args, "GET", f"/api/rollouts/{r['id']}")
        if detail.get("not_ready"):
            lines.append(f"    {not_ready_words(detail['not_ready'])}")
        judged = detail["watch"] if r["phase"] == "watching" else detail["judge"]
        if r["phase"] == "mirroring" and detail.get("mirror"):
            judged = {"mirror": detail["mirror"]}
        for metric, j in judged.items():
            lines.append(f"    {metric:<12} {evidence_words(j['evidence'])}  -> {j['verdict']}")
    return lines


def _num(value: Any) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"


def evidence_words(ev: dict[str, Any]) -> str:
    """The judge's numbers in one line, whichever judgement they come from (step, mirror, watch)."""
    if "compared" in ev:  # the mirror phase
        return f"{ev['different']} of {ev['compared']} mirrored answers differ"
    if "change_detector" in ev:  # the watch after promotion: roles reversed
        cd = ev["change_detector"]
        return f"since promotion {cd['bad']}/{cd['requests']} bad (was {_num(cd['reference_rate'])}); " + (
            evidence_words(ev["reversed"]) if "counts" in ev.get("reversed", {}) else ""
        )
    if "counts" not in ev:
        return ""
    c, s, reg = ev["counts"]["canary"], ev["counts"]["stable"], ev["regression"]
    return (
        f"canary {c['bad']}/{c['requests']} bad ({c['rate']:.2%})  "
        f"stable {s['bad']}/{s['requests']} ({s['rate']:.2%})  e-value {_num(reg['e_value'])} of {reg['threshold']:g}"
    )


DEADLINES = {"platform": "the platform's start deadline", "controller": "the rollout's ready deadline"}


def not_ready_words(n: dict[str, Any]) -> str:
    """A pending canary not ready yet (the summary's ``not_ready``): how long it has been waited
    for, until when, and why, in the platform's words."""
    by = DEADLINES.get(n["deadline_by"], n["deadline_by"])
    return f"not ready after {n['waited_s']:.0f} s of {n['deadline_s']:.0f} s ({by}): {n['reason']}"


def _one_line(r: dict[str, Any]) -> str:
    where = f"step {r['step']}/{r['steps']} at {r['weight']:g}%" if r["phase"] in ("progressing", "paused") else ""
    return (
        f"{r['id'][:8]}  {r['service']:<8} {r['stable']} -> {r['canary']:<5} {r['phase']:<12} {where}  {r['reason']}"
    ).rstrip()


def status(args: argparse.Namespace) -> int:
    if not args.watch:
        print("\n".join(_status_lines(args)))
        return 0
    while True:
        print("\x1b[2J\x1b[H" + time.strftime("%H:%M:%S") + "  canary status (Ctrl-C to leave)\n")
        print("\n".join(_status_lines(args)), flush=True)
        time.sleep(args.interval)


def command(args: argparse.Namespace) -> int:
    group = None if _matches(args, args.id) else cli_groups.find_group(_call, args, args.id)
    if group is not None and args.command != "promote":  # every member at once
        _call(args, "POST", f"/api/groups/{group['id']}/{args.command}")
        print(f"{args.command}: accepted for group {group['name']} ({group['id'][:8]}) and its members")
        return 0
    rid = _resolve(args, args.id)
    _call(args, "POST", f"/api/rollouts/{rid}/{args.command}")
    print(f"{args.command}: accepted for rollout {rid}")
    return 0


def reprocess(args: argparse.Namespace) -> int:
    rid = _resolve(args, args.id)
    answer = _call(args, "POST", f"/api/rollouts/{rid}/reprocess")
    print(f"{answer['events_handed_back']} events of {answer['release']} handed back to stable (rollout {rid})")
    return 0


def history(args: argparse.Namespace) -> int:
    rollouts = _call(args, "GET", "/api/rollouts")["rollouts"]
    for r in rollouts:
        print(_one_line(r))
    if not rollouts:
        print("no rollouts yet")
    return 0


def why(args: argparse.Namespace) -> int:
    group = None if _matches(args, args.id) else cli_groups.find_group(_call, args, args.id)
    if group is not None:
        return cli_groups.why_group(_call, args, group)
    rid = _resolve(args, args.id)
    r = _call(args, "GET", f"/api/rollouts/{rid}")
    print(_one_line(r))
    for d in r["decisions"]:
        print(
            f"  {time.strftime('%H:%M:%S', time.localtime(d['at']))}  {d['phase_from']} -> {d['phase_to']}"
            f"  by {d['decided_by']}: {d['reason']}"
        )
        for metric, ev in d["evidence"].items():  # the numbers behind it, as stored with the decision
            words = evidence_words(ev) if isinstance(ev, dict) else ""
            if words:
                print(f"      {metric}: {words}")
    if r.get("not_ready"):
        print(f"  now, {not_ready_words(r['not_ready'])}")
    judged = {**r["judge"], **({"mirror": r["mirror"]} if r.get("mirror") else {})}
    for metric, j in {**judged, **{f"{m} (watch)": j for m, j in r.get("watch", {}).items()}}.items():
        print(f"  now, {metric}: {j['verdict']}: {j['reason']}")
    for reader in r.get("readers", []):
        print(
            f"  reader {reader['reader']}: table {reader['version']}, polled {reader['seconds_since_poll']:.1f} s ago"
        )
    return 0


def _matches(args: argparse.Namespace, prefix: str) -> bool:
    return any(r["id"].startswith(prefix) for r in _call(args, "GET", "/api/rollouts")["rollouts"])


def _resolve(args: argparse.Namespace, prefix: str) -> str:
    ids = [r["id"] for r in _call(args, "GET", "/api/rollouts")["rollouts"] if r["id"].startswith(prefix)]
    if len(ids) != 1:
        raise CommandError(f"{'no' if not ids else 'more than one'} rollout matches {prefix!r}")
    return str(ids[0])


def add_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--controller", default="http://127.0.0.1:8700", help="controller URL")
        p.add_argument("--state-dir", default="state", help="where `canary up` keeps the admin token")
        return p

    p = common(sub.add_parser("release", help="start a rollout of SERVICE to a new release, or a group of them"))
    p.add_argument("service", nargs="?", help="a service of the catalog")
    p.add_argument("--to", help="the new release")
    p.add_argument("--spec", help="rollout spec overriding the catalog entry's defaults")
    p.add_argument("--catalog", default="", help="service catalog (default CANARY_CATALOG, else manifests/services)")
    p.add_argument("--group", metavar="FILE", help="release a group (kind: Group, e.g. manifests/groups/april-13.yaml)")
    p.set_defaults(func=release)
    p = common(sub.add_parser("status", help="active rollouts: phase, weight, counts, the judge's evidence"))
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0)
    p.set_defaults(func=status)
    for name in ("pause", "resume", "promote", "abort"):
        p = common(sub.add_parser(name, help=f"{name} a rollout"))
        p.add_argument("id", help="rollout id (a unique prefix is enough), or a group's name or id")
        p.set_defaults(func=command, command=name)
    common(sub.add_parser("history", help="every rollout and how it ended")).set_defaults(func=history)
    p = common(sub.add_parser("reprocess", help="after a rollback: run the entry's after_rollback hooks again"))
    p.add_argument("id", help="rollout id (a unique prefix is enough)")
    p.set_defaults(func=reprocess)
    p = common(sub.add_parser("why", help="each decision of a rollout and its reason"))
    p.add_argument("id")
    p.set_defaults(func=why)
