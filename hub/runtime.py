"""Process-wide tuning of the Python runtime for the hub's workloads (called once per process)."""

from __future__ import annotations

import gc

# Allocations between two young-generation collections (Python's default: 700).
YOUNG_COLLECTION_EVERY = 50_000


def tune_garbage_collector() -> None:
    """Collect cyclic garbage less often, and never look at what the process loaded at start.

    The resolution engine allocates millions of small objects per minute (profiles, decisions,
    rows) that reference counting frees; almost none form reference cycles. With Python's
    defaults the collector walked every live object ever more often as the process's caches
    filled: a fifth of a large backfill's time went to collections that found next to nothing.
    Objects alive after start-up (modules, Django's registries) are frozen out of collection.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)
