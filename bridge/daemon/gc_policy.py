"""The daemon's cyclic-GC policy, applied once everything that lives as long as the process is
built (providers, models, servers): the benches apply the same one.

- ``gc.freeze()``: what exists now stays out of every later pass (the SDKs' and models' ~120k
  objects: a full pass over them cost ~60 ms here).
- A first generation of 10 000 allocations instead of 700: a call's per-frame objects (events,
  futures, message dicts) die within a tick, so with room to die they are no longer promoted,
  and the older generations' passes, which walk every call's objects, stop coming. Measured at
  150 calls (bench/voice_to_voice.py --gc-threshold, bench/profiles/latency_150.md): GC CPU
  1230 -> 320 ms over the run, no gen-1/gen-2 pass instead of 28 + 2, the longest pause 89 ->
  38 ms of CPU (a gen-2 pass at 150 calls stalled every call's audio that long).
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 20, 10)


def settle_gc() -> None:
    """Freeze what exists and set the generations' thresholds (idempotent)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
