"""The daemon's GC policy (bridge/daemon/gc_policy.py): what exists when it is applied is
frozen, and the first generation has room for a call's per-frame objects to die young."""

from __future__ import annotations

import gc

from bridge.daemon.gc_policy import THRESHOLDS, settle_gc


def test_settle_gc_freezes_what_exists_and_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    kept = [[n] for n in range(1000)]  # containers the cyclic GC tracks
    try:
        settle_gc()
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[0] > 700  # Python's default promotes per-frame objects
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        assert not any(o is kept[0] for o in gc.get_objects())  # out of every later pass
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
