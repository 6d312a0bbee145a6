"""Process-wide tuning for the long-running commands (the KCL child, replay).

The engine allocates many small containers per event (envelopes, registers, states) and frees
almost all of them by reference counting. CPython's default collector still runs a generation-0
collection every 700 net allocations, and each one walks the states buffered for the flush: some
18 % of a replay's time went there. The data path makes no reference cycles worth collecting
early, so the threshold is raised, and what exists at start-up (modules, settings) is moved out
of the collector's sight for good.
"""
from __future__ import annotations

import gc

#: net container allocations between generation-0 collections (CPython's default: 700)
GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect rarely, and never again walk what start-up created."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
