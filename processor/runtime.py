"""Process-wide tuning for the long-running commands (the KCL child, replay), and what they run.

The engine allocates many small containers per event (envelopes, registers, states) and frees
almost all of them by reference counting. CPython's default collector still runs a generation-0
collection every 700 net allocations, and each one walks the states buffered for the flush: some
18 % of a replay's time went there. The data path makes no reference cycles worth collecting
early, so the threshold is raised, and what exists at start-up (modules, settings) is moved out
of the collector's sight for good.
"""
from __future__ import annotations

import gc
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

#: net container allocations between generation-0 collections (CPython's default: 700)
GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect rarely, and never again walk what start-up created."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


#: the modules a wheel compiles (setup.py): each runs at least once per event
HOT_PATH = (
    "processor.adapters",
    "processor.adapters.genesys",
    "processor.analytics.sessions",
    "processor.codec",
    "processor.decode",
    "processor.engine",
    "processor.limits",
    "processor.model",
    "processor.reduce",
    "processor.replay",
    "processor.store",
)


def extension_modules(root: Path) -> dict[str, Path]:
    """The processor modules that `root` (a directory holding processor/) has as extension modules,
    by name (a package's own __init__ by the package's), with their files. Beside its source, the
    extension module is the one imported."""
    found = {}
    for path in (root / "processor").rglob("*"):
        suffix = next((suffix for suffix in EXTENSION_SUFFIXES if path.name.endswith(suffix)), None)
        if suffix:
            module = ".".join(path.relative_to(root).with_name(path.name.removesuffix(suffix)).parts)
            found[module.removesuffix(".__init__")] = path
    return found


def compiled_modules() -> list[str]:
    """The HOT_PATH modules this installation runs compiled: all of them from a wheel built with a
    C compiler, none from an editable install or a build without one."""
    installed = extension_modules(Path(__file__).resolve().parent.parent)
    return [name for name in HOT_PATH if name in installed]


def describe_build() -> str:
    """One line for a long-running command's log: whether the hot path runs compiled, and which
    part does not (a module that failed to compile ships as its source)."""
    compiled = compiled_modules()
    if not compiled:
        return "hot path pure Python (not compiled)"
    pure = [name for name in HOT_PATH if name not in compiled]
    return (f"hot path compiled ({len(compiled)} of {len(HOT_PATH)} modules"
            + (f"; pure Python: {', '.join(pure)})" if pure else ")"))
