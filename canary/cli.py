"""``canary``: the command line of the framework."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from canary.traffic.command import LoadUsageError
from core.errors import ReleaseWardenError

if TYPE_CHECKING:
    from canary.controller.spec import Problem


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _demo(args: argparse.Namespace) -> int:
    from canary.replay.plan import DEMO, QUICK
    from canary.replay.run import replay

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the replay as cleanly as Ctrl-C
    result = replay(Path(args.state_dir), QUICK if args.quick else DEMO)
    unexpected = [
        f"{service} {r['release']}: {r['outcome']}"
        for service, releases in result["services"].items()
        for r in releases
        if r["outcome"] != ("promoted" if r["release"] in ("1.2", "2.1") else "rolled_back")
    ]
    if unexpected:
        print("the replay did not go as designed: " + "; ".join(unexpected), file=sys.stderr)
        return 1
    return 0


def _read_yaml(file: Path) -> object:
    """A scenario or the spec it names: one YAML document, or a UsageError in words (not YAML, an
    alias bomb, nesting too deep: ``canary.controller.spec.parse``)."""
    from canary.controller.spec import parse

    _node, data, _lines, refused = parse(file.read_text(encoding="utf-8"))
    if refused:
        raise UsageError(refused[0].render(str(file)))
    return data


def _check_rollout(spec: dict[str, Any]) -> list[Problem]:
    """A scenario's rollout checked as ``canary lint`` checks a spec (``canary.controller.spec.check``,
    which ``canary.analysis`` may not import): its ``spec:`` mapping in a manifest."""
    import yaml

    from canary.controller.spec import check
    from canary.controller.spec_schema import SCHEMA

    manifest = {"apiVersion": SCHEMA["properties"]["apiVersion"]["const"], "kind": "Rollout", "spec": spec}
    return check(yaml.safe_dump(manifest, sort_keys=False), "rollout")[1]


def _simulate(args: argparse.Namespace) -> int:
    import json

    from canary.analysis import simulate
    from canary.analysis.scenario import Scenario, ScenarioError

    unknown = [p for p in args.policy or [] if p not in simulate.POLICY_NAMES]
    if unknown:
        raise UsageError(f"unknown policy {unknown[0]!r}: choose from {', '.join(simulate.POLICY_NAMES)}")
    results = []
    for path in args.scenario:
        try:
            data = _read_yaml(Path(path))

            def read_spec(name: str, base: Path = Path(path).parent) -> object:
                # a rollout spec named by a scenario: relative to the working directory, else to the scenario
                return _read_yaml(Path(name) if Path(name).exists() else base / name)

            scenario = Scenario.from_dict(data, read_spec, _check_rollout)
        except OSError as exc:
            raise UsageError(f"cannot read scenario {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None
        except ScenarioError as exc:
            raise UsageError(f"{path}: {exc}") from None
        try:
            result = simulate.run(scenario, args.policy, runs=args.runs, seed=args.seed)
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from None
        results.append(result)
        if not args.json:
            print(simulate.table(result) + "\n")
    if args.json:
        out = [{"scenario": r["scenario"], "policies": r["policies"]} for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _up(args: argparse.Namespace) -> int:
    from canary.stack import up

    return up(
        Path(args.state_dir),
        args.controller_port,
        args.router_port,
        prometheus=args.prometheus,
        catalog=args.catalog or os.environ.get("CANARY_CATALOG", ""),
    )


def _lint_catalog(paths: Sequence[str], name: str) -> bool:
    """Print a catalog's problems (or ``ok``); True if it has any."""
    from canary.catalog import lint_catalog

    found = lint_catalog(paths)
    for problem in found:
        print(problem)
    if not found:
        print(f"{name}: ok")
    return bool(found)


def _lint(args: argparse.Namespace) -> int:
    from canary.catalog.loader import specs_beside, top_level_kinds
    from canary.catalog.settings import catalog_paths
    from canary.controller.spec import rule_alerts

    if not args.files and not args.catalog:
        raise UsageError("give rollout specs or catalog entries to check, or --catalog")
    alerts = rule_alerts(Path(args.rules))
    failed = bool(args.catalog) and _lint_catalog(catalog_paths(args.catalog), f"catalog {args.catalog}")
    for path in args.files:
        if Path(path).is_dir():  # a catalog directory: every entry, and names used twice across them
            failed = _lint_catalog([path], path) or failed
            members = [path, *(catalog_paths(args.catalog) if args.catalog else ())]  # a group's members
            for beside in specs_beside(Path(path)):  # and the specs kept beside them
                text = beside.read_text(encoding="utf-8", errors="replace")
                failed = _lint_spec(str(beside), text, alerts, members) or failed
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None
        if "Service" in top_level_kinds(text):  # a catalog entry, not a rollout spec
            failed = _lint_catalog([path], path) or failed
            continue
        catalog = catalog_paths(args.catalog) if args.catalog else ()  # a group's members' defaults
        failed = _lint_spec(path, text, alerts, catalog) or failed
    return 1 if failed else 0


def _lint_spec(path: str, text: str, alerts: dict[str, bool], catalog: Sequence[str]) -> bool:
    """Print a rollout spec's or a group's problems (or ``ok``); True if it has any."""
    from canary.cli_groups import lint

    problems = lint(text, path, alerts, catalog)
    for problem in problems:
        print(problem.render(path))
    if not problems:
        print(f"{path}: ok")
    return bool(problems)


class UsageError(ReleaseWardenError):
    """A bad argument or input file: printed as one line, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canary", description="Canary releases that roll back by themselves.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="replay the 13 April 2022 release on the embedded default (SQLite, local processes) and report",
    )
    demo.add_argument("--state-dir", default="state/demo", help="where databases, logs and the report go")
    demo.add_argument("--quick", action="store_true", help="much shorter bakes (the test suite's replay)")
    demo.set_defaults(func=_demo)

    sim = sub.add_parser("simulate", help="replay rollback policies on simulated traffic (see benchmarks/scenarios)")
    sim.add_argument("--scenario", action="append", required=True, metavar="FILE", help="scenario YAML (repeatable)")
    sim.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="sequential, flagger, argo, argo-tight (repeatable; default all)",
    )
    sim.add_argument("--runs", type=_positive_int, help="runs per scenario (default: the scenario's)")
    sim.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    sim.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sim.set_defaults(func=_simulate)
    from canary import cli_rollouts

    cli_rollouts.add_commands(sub)
    upp = sub.add_parser("up", help="controller, router and the stable services, in the foreground")
    upp.add_argument("--state-dir", default="state")
    upp.add_argument("--controller-port", type=int, default=8700)
    upp.add_argument("--router-port", type=int, default=8080)
    upp.add_argument(
        "--prometheus",
        action="store_true",
        help="also run Prometheus and Alertmanager (Debian's packages) from manifests/: the controller judges "
        "from Prometheus, and alerts roll back through Alertmanager",
    )
    upp.add_argument(
        "--catalog",
        default="",
        help="service catalog: directories or files, comma-separated (default CANARY_CATALOG, else manifests/services)",
    )
    upp.set_defaults(func=_up)

    lint = sub.add_parser(
        "lint", help="validate rollout specs, groups and catalog entries (errors name the field and line)"
    )
    lint.add_argument(
        "files", nargs="*", metavar="FILE", help="rollout specs, groups, catalog entries or catalog directories"
    )
    lint.add_argument("--catalog", default="", help="also check this catalog (directories or files, comma-separated)")
    lint.add_argument(
        "--rules",
        default=str(Path(__file__).resolve().parent.parent / "manifests" / "prometheus" / "rules"),
        help="where the Prometheus rules are: a spec's alerts must be ones that roll back (default: the shipped ones)",
    )
    lint.set_defaults(func=_lint)

    from canary.traffic.command import add_load_command  # the incident's load generator and its services

    add_load_command(sub, _positive_float, _positive_int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, so that a reader gone (below) is not an error at exit
        return code
    except (UsageError, LoadUsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ReleaseWardenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `canary history | head -1`: the reader has what it wanted
        if not _reader_gone(sys.stdout):
            raise  # another pipe (a child's): an error, not the end of a listing
        # what is still buffered goes nowhere, not into a second error as the interpreter exits
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE


def _reader_gone(stream: TextIO) -> bool:
    """``stream`` is a pipe whose reading end is closed (poll says so of its writing end)."""
    try:
        poll = select.poll()
        poll.register(stream.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":
    sys.exit(main())
