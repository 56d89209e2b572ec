"""bench/sip_concurrency.py --callers-cpus: every thread of the bench is moved, not only the
one that called (os.sched_setaffinity(0, ...) is the calling thread's on Linux): the pumps
run_daemon started to read the daemon's output are threads of this process started before."""

from __future__ import annotations

import os
import threading

from bench.sip_concurrency import pin_callers, pin_threads


def test_callers_pinning_moves_the_threads_started_before_it() -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    seen: list[set[int]] = []
    go, done = threading.Event(), threading.Event()

    def earlier_thread() -> None:  # like run_daemon's log pumps: started before the pinning
        go.wait(10)
        seen.append(os.sched_getaffinity(0))
        done.set()

    thread = threading.Thread(target=earlier_thread, daemon=True)
    thread.start()
    try:
        pin_callers({cpu})
        go.set()
        assert done.wait(10)
        assert seen == [{cpu}]
        assert os.sched_getaffinity(0) == {cpu}
    finally:
        go.set()
        thread.join(10)
        pin_threads(os.getpid(), before)
    assert os.sched_getaffinity(0) == before
