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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canary", description="Canary releases that roll back by themselves.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on the embedded default (SQLite, local processes)")
    demo.add_argument("--state-dir", default="state/demo", help="where databases and logs go")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ReleaseWardenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
