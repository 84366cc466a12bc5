"""Where each value of a YAML document starts, so that an error can name its field and line.

Shared by the parts that read YAML written by people (webhook settings today; the rollout spec's
``canary/controller/spec.py`` has its own copy that can move here).
"""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[Any, ...]


def line_map(node: yaml.Node | None, prefix: Path = ()) -> dict[Path, int]:
    """Each path in the document (keys and list indexes) -> the 1-based line where it starts."""
    out: dict[Path, int] = {}
    if node is None:
        return out
    out[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out.update(line_map(value, (*prefix, key.value)))
            out[(*prefix, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(line_map(item, (*prefix, i)))
    return out


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest ancestor that is in the document."""
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)
