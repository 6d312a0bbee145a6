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
import sys
from importlib.machinery import EXTENSION_SUFFIXES

#: net container allocations between generation-0 collections (CPython's default: 700)
GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect rarely, and never again walk what start-up created."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def compiled_modules() -> list[str]:
    """The processor modules this process runs compiled (setup.py: a wheel built with a C compiler);
    empty where it runs pure Python (an editable install, or a build without a compiler)."""
    return sorted(name for name, module in list(sys.modules.items())
                  if name.startswith("processor") and getattr(module, "__file__", None)
                  and module.__file__.endswith(tuple(EXTENSION_SUFFIXES)))


def describe_build() -> str:
    """One line for a long-running command's log: compiled or pure Python, and how much."""
    compiled = compiled_modules()
    return f"hot path compiled ({len(compiled)} modules)" if compiled else "hot path pure Python (not compiled)"
