"""``canary``: the command line of the framework."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.errors import ReleaseWardenError


def _demo(args: argparse.Namespace) -> int:
    from canary import demo_stable

    print(f"Starting the three services at their stable release (state in {args.state_dir})")
    demo_stable.run(Path(args.state_dir))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import json

    import yaml

    from canary.analysis import simulate
    from canary.analysis.policies import POLICIES
    from canary.analysis.scenario import Scenario, ScenarioError

    unknown = [p for p in args.policy or [] if p not in POLICIES]
    if unknown:
        raise UsageError(f"unknown policy {unknown[0]!r}: choose from {', '.join(POLICIES)}")
    results = []
    for path in args.scenario:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            scenario = Scenario.from_dict(data)
        except OSError as exc:
            raise UsageError(f"cannot read scenario {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML: {exc}") from None
        except ScenarioError as exc:
            raise UsageError(f"{path}: {exc}") from None
        result = simulate.run(scenario, args.policy, runs=args.runs, seed=args.seed)
        results.append(result)
        if not args.json:
            print(simulate.table(result) + "\n")
    if args.json:
        out = [{"scenario": r["scenario"], "policies": r["policies"]} for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    return 0


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
    demo = sub.add_parser("demo", help="run the main job on the embedded default (SQLite, local processes)")
    demo.add_argument("--state-dir", default="state/demo", help="where databases and logs go")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ReleaseWardenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
