"""The decoder pool's process lifecycle: cancellation at any point ends promptly and leaves no
decoder process running (asyncio.create_subprocess_exec, cancelled mid-start on Python 3.11,
waited forever: a test that failed with a spare decoder starting hung the whole run)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from pathlib import Path

import pytest

from bridge.providers.stt.pocketsphinx_pool import DecoderPool, DecoderProcess
from bridge.providers.stt.pocketsphinx_stt import PocketsphinxSTT

_WORKER_ARGS = ["--grammar", "", "--max-utterance-s", "30"]
_BOUND_S = 20.0  # a bound for a stuck test, not a speed assertion


def _live_workers() -> set[int]:
    """This process's decoder children that have not exited (zombies count as exited)."""
    me = str(os.getpid())
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[1] == me and fields[0] != "Z" and b"pocketsphinx_worker" in cmdline:
            found.add(int(entry.name))
    return found


def _wait_for_no_workers(before: set[int]) -> set[int]:
    deadline = time.monotonic() + _BOUND_S
    while (left := _live_workers() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


async def test_spawn_cancelled_while_connecting_kills_the_child() -> None:
    before = _live_workers()
    task = asyncio.get_running_loop().create_task(DecoderProcess.spawn(_WORKER_ARGS))
    await asyncio.sleep(0)  # the child exists; the task waits for its pipes to connect
    assert _live_workers() - before
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=_BOUND_S)  # wait_for would wait forever on a hang
    assert task in done and task.cancelled()
    assert not await asyncio.to_thread(_wait_for_no_workers, before)


@pytest.mark.parametrize("yields", [0, 1, 2, 5, 20])
def test_abandoned_provider_does_not_hang_loop_shutdown(yields: int) -> None:
    """A caller that never closes its stream or provider (a failing test, a crash): the loop's
    shutdown cancels the spare decoder's start wherever it is, and still returns."""
    before = _live_workers()

    async def abandon() -> None:
        stt = PocketsphinxSTT(idle_decoders=2)
        await stt.open()
        for _ in range(yields):  # stop at different points of the spare's start
            await asyncio.sleep(0)

    # in a daemon thread, so a regression fails the test instead of hanging the run
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(abandon())
        except BaseException as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(_BOUND_S), "loop shutdown hung on the decoder pool"
    assert not errors
    gc.collect()  # the abandoned pipes close: the decoders see EOF (or were killed) and exit
    assert not _wait_for_no_workers(before)


async def test_pool_close_stops_idle_and_starting_decoders() -> None:
    before = _live_workers()
    pool = DecoderPool(_WORKER_ARGS, keep_idle=2)
    await pool.prewarm()
    assert pool.idle_count == 2
    worker = await pool.take()  # leaves one idle: no new spare
    assert pool.idle_count == 1
    await pool.give_back(worker)  # loaded and healthy: kept
    assert pool.idle_count == 2
    taken = [await pool.take(), await pool.take()]  # the second leaves none idle: a spare starts
    assert pool._starting == 1
    await pool.aclose()
    for w in taken:
        await pool.give_back(w)  # the pool is closed: stopped
    assert pool.idle_count == 0
    assert not await asyncio.to_thread(_wait_for_no_workers, before)
