"""The daemon's cyclic-GC policy, applied once everything that lives as long as the process is
built (providers, models, servers): the benches apply the same one.

``gc.freeze()``: what exists now stays out of every later pass (the SDKs' and models' ~120k
objects: a full pass over them cost ~60 ms here; at 150 calls the longest gen-2 pause went
from 231 to 89-94 ms of CPU with it, bench/profiles/latency_150.md).

Thresholds stay Python's. Measured at 150 calls (``bench/voice_to_voice.py --gc-threshold
10000 20 10``): a 10 000-allocation first generation cut GC CPU by ~75 % and left no gen-1/2
pass in a run (longest pause 89 -> 30-47 ms of CPU), but its gen-0 passes, each over up to
10 000 young objects, cut a single call's fallback line for ~120 ms on a busy box
(tests/cloud_call, 2 of 3 runs; 0 of 2 with Python's thresholds): not taken without a
quiet-box measurement of both sides. ``settle_gc(thresholds)`` sets them for such runs.
"""

from __future__ import annotations

import gc

LARGE_FIRST_GENERATION = (10_000, 20, 10)  # the measured alternative (see above)


def settle_gc(thresholds: tuple[int, int, int] | None = None) -> None:
    """Freeze what exists; set the generations' thresholds if given (idempotent)."""
    gc.freeze()
    if thresholds is not None:
        gc.set_threshold(*thresholds)
