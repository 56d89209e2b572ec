"""The fakes' shared stall/drop injection (devkit/fakes/control.py): the chunk before which the
connection is cut or held silent, journalled, counted across the replies of one stream."""

from __future__ import annotations

import asyncio

from devkit.fakes.control import FaultedStream, Faults, Journal


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


async def test_drop_cuts_the_connection_before_the_chunk_and_counts_across_replies() -> None:
    journal, transport = Journal(), Transport()
    stream = FaultedStream(Faults(drop_after=3), journal, transport)
    first = [c async for c in stream.chunks("ab")]
    second = [c async for c in stream.chunks("cde")]
    assert (first, second) == (["a", "b"], ["c"])
    assert stream.dropped and transport.aborted
    assert [(e.kind, e.data) for e in journal.events] == [("dropped", {"sent": 3})]


async def test_stall_holds_the_stream_silent_until_cancelled() -> None:
    journal = Journal()
    stream = FaultedStream(Faults(stall_after=1), journal, None)
    got: list[str] = []

    async def consume() -> None:
        async for c in stream.chunks("abc"):
            got.append(c)

    task = asyncio.create_task(consume())
    await journal.wait_for(lambda j: j.count("stalled") == 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert got == ["a"] and not stream.dropped


async def test_faults_apply_to_fault_times_streams_only() -> None:
    faults, journal = Faults(drop_after=0, fault_times=1), Journal()
    assert [c async for c in FaultedStream(faults, journal, None).chunks("ab")] == []
    assert [c async for c in FaultedStream(faults, journal, None).chunks("ab")] == ["a", "b"]
