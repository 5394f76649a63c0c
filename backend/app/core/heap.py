"""Garbage-collector settings for a serving process (docs/SCALING.md, "Garbage collection").

After start-up the heap holds a great many long-lived container objects (modules, routes, validators, SQL).
A full collection walks all of them, several times a minute under load, and every request in flight waits
that long: the tail latency grows (measured in docs/SCALING.md). ``gc.freeze()`` moves what exists at
start-up out of the collector's sight for good, so a full collection walks only what came after.

The young generation is also collected less often: at the default threshold (700 net new objects) it ran
every request or two, and whatever 32 requests in flight held at that moment was promoted and later walked
again. Most request objects die by reference counting long before 50,000 net new ones pile up.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Collect once, freeze the survivors, and collect the young generation less often. Process-wide: call it
    once the app has started (the lifespan does, unless ``GC_TUNING=false``)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
