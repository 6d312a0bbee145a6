"""The JSONPath subset EventBridge accepts in `PartitionKeyPath` and input paths.

`$`, `.name`, `['name']` / `["name"]` and `[index]`: enough to point at one value in an event.
Paths are compiled once, at settings load, so a typo fails at start-up, not per record.
"""
from __future__ import annotations

import re
from typing import Any, Callable

_STEP = re.compile(r"""\.([A-Za-z_$@][\w$@\-]*)|\[\s*(?:'([^']*)'|"([^"]*)"|(-?\d+))\s*\]""")

Path = Callable[[Any], Any]


class PathError(ValueError):
    """A JSONPath outside the supported subset."""


_MISSING = object()


def compile_path(path: str) -> Path:
    """Compile `path`; the result returns the value it points at, or None when absent."""
    if not path.startswith("$"):
        raise PathError(f"JSONPath must start with '$': {path!r}")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise PathError(f"unsupported JSONPath {path!r} at offset {position}")
        name = match.group(1) or match.group(2) or match.group(3)
        steps.append(int(match.group(4)) if match.group(4) is not None else name)
        position = match.end()

    def lookup(document: Any) -> Any:
        node = document
        for step in steps:
            if isinstance(step, int):
                if not isinstance(node, list) or not -len(node) <= step < len(node):
                    return None
                node = node[step]
            else:
                if not isinstance(node, dict):
                    return None
                node = node.get(step, _MISSING)
                if node is _MISSING:
                    return None
        return node

    return lookup
