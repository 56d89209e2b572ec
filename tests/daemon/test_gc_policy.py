"""The daemon's GC policy (bridge/daemon/gc_policy.py): what exists when it is applied is
frozen out of later passes; thresholds change only when asked."""

from __future__ import annotations

import gc

from bridge.daemon.gc_policy import LARGE_FIRST_GENERATION, settle_gc


def test_settle_gc_freezes_what_exists_and_keeps_the_thresholds() -> None:
    before = gc.get_threshold()
    kept = [[n] for n in range(1000)]  # containers the cyclic GC tracks
    try:
        settle_gc()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() >= len(kept)
        assert not any(o is kept[0] for o in gc.get_objects())  # out of every later pass
    finally:
        gc.unfreeze()


def test_settle_gc_sets_thresholds_when_asked() -> None:
    before = gc.get_threshold()
    try:
        settle_gc(LARGE_FIRST_GENERATION)
        assert gc.get_threshold() == LARGE_FIRST_GENERATION
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
