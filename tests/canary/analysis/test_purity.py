"""``canary/analysis`` stays pure: no module imports anything that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import canary.analysis

ALLOWED = {"__future__", "collections", "dataclasses", "enum", "itertools", "json", "math", "typing", "numpy", "canary"}


def test_analysis_imports_nothing_that_does_io():
    root = Path(canary.analysis.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED, f"{path.name} imports {name}"
                if top == "canary":
                    assert name.startswith("canary.analysis"), f"{path.name} imports {name}"
