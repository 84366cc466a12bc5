"""Where each value of a YAML document starts, so that an error can name its field and line.

The guard every part that reads YAML written by people needs first (webhook settings, catalog
entries, rollout and group specs): :func:`expanded_size` against alias bombs; :func:`duplicate_keys`
(YAML keeps the last of two equal keys silently) and :func:`non_finite_numbers` (``.nan`` passes
every range check) for what a schema cannot see; and :func:`line_map` for the webhook settings
(the spec and catalog loaders keep their own walk).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import yaml

Path = tuple[Any, ...]
MAX_NODES = 100_000  # values a document may hold once its aliases are expanded


def expanded_size(node: yaml.Node, budget: int) -> int:
    """How many nodes the document has with aliases expanded, counting no further than ``budget``
    (a few lines of nested aliases expand to billions: whatever walks the document walks them all)."""
    count, stack = 0, [node]
    while stack and count <= budget:
        n = stack.pop()
        count += 1
        if isinstance(n, yaml.MappingNode):
            stack.extend(v for pair in n.value for v in pair)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return count


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


def duplicate_keys(node: yaml.Node, at: Path = ()) -> Iterator[tuple[Path, str]]:
    """(path, problem) for each key given twice in one mapping: YAML takes the last one silently, and
    the first is lost (``service: importer`` then ``service: opens`` releases the opens)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                yield (*at, key.value), "given twice"
            seen.add(key.value)
            yield from duplicate_keys(value, (*at, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from duplicate_keys(item, (*at, i))


def leaves(data: Any, at: Path = ()) -> Iterator[tuple[Path, Any]]:
    """(path, value) for each value of the document that is neither a mapping nor a list."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, (*at, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from leaves(item, (*at, i))
    else:
        yield at, data


def non_finite_numbers(data: Any) -> Iterator[tuple[Path, str]]:
    """(path, problem) for each ``.nan`` or ``.inf`` in the document: every comparison with NaN is
    false, so NaN passes a schema's minimum and maximum alike, and reaches arithmetic that fails."""
    for at, value in leaves(data):
        if isinstance(value, float) and not math.isfinite(value):
            yield at, "must be a finite number"
