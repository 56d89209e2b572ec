"""Deepgram v1 Finalize accounting against the fake, with the real client: a Finalize while the
socket is down (the reconnect's handshake held back, as a slow network would), and a late
reply to a Finalize the client answered itself."""

from __future__ import annotations

import asyncio
import contextlib

from devkit.fakes import FakeCloud

from .conftest import silence, speech
from .test_deepgram import collect_until, make, push


async def test_a_finalize_while_the_socket_is_down_keeps_the_turns_words(cloud: FakeCloud) -> None:
    """A turn spoken while the socket is down (reconnect in progress): its audio goes to the
    replay, not to a socket. The engine's Finalize must then be owed and resent on the new
    socket with the replay, whose reply carries the words ("Second turn words."); counting
    only the audio SENT since the last Finalize (~100 ms) answered it at once, empty, and the
    turn's words were lost."""
    cloud.deepgram.script.extend(["Hello there.", "Second turn words."])
    first = speech(500) + silence(40)
    cloud.deepgram.faults.drop_after = len(first) // 2 + 1  # mu-law: the first audio after it
    cloud.deepgram.faults.fault_times = 1
    stt = make(cloud.http_url, endpointing_ms=3000, max_reconnects=3)
    stream = await stt.open()
    await push(stream, first)
    await stream.finalize()  # owed: 540 ms to process
    got = await collect_until(stream, 1)
    assert got[-1].text == "Hello there."

    gate = asyncio.Event()
    connect = stt.connect

    async def held_connect(stack: contextlib.AsyncExitStack):  # type: ignore[no-untyped-def]
        await gate.wait()  # the network is slow to give us the new socket
        return await connect(stack)

    stt.connect = held_connect  # type: ignore[method-assign]
    await push(stream, silence(100))  # the fake cuts the socket on this
    await cloud.deepgram.journal.wait_for(lambda j: j.count("dropped") == 1)
    for _ in range(500):  # bounded: until the client saw the drop (no socket now)
        if stream._conn is None:
            break
        await asyncio.sleep(0.01)
    assert stream._conn is None

    await push(stream, speech(600) + silence(40))  # the next turn, while no socket is open
    await stream.finalize()  # the engine's endpoint for it
    gate.set()
    got = await collect_until(stream, 1, limit_s=10.0)
    await stream.close()
    assert stream.reconnects == 1
    assert any(t.text == "Second turn words." for t in got), got  # before (or with) its end


async def test_a_late_reply_to_a_locally_answered_finalize_ends_not_the_next_one(cloud: FakeCloud) -> None:
    """F1 (100 ms after F0) is answered by the client; Deepgram answers it too (documented
    "may"), but its reply comes after F2 (the next turn's endpoint, 540 ms of audio later)
    went out, as it will whenever Deepgram's 150-300 ms processing delay is longer than the
    caller's next short phrase. Matched by count, that empty reply was taken as F2's answer
    and F2's real reply ("Second part.") ended nothing; matched by where its audio ends, it
    is F1's."""
    cloud.deepgram.script.extend(["Hello there.", "Second part."])
    cloud.deepgram.small_finalize_answered = True
    cloud.deepgram.final_delay_s = 0.3
    stream = await make(cloud.http_url, endpointing_ms=3000).open()
    await push(stream, speech(500) + silence(40))
    await stream.finalize()  # F0: owed
    await push(stream, silence(100))
    await stream.finalize()  # F1: 100 ms, answered here
    await push(stream, speech(500) + silence(40))
    await stream.finalize()  # F2: 540 ms, owed
    got = await collect_until(stream, 3, limit_s=10.0)
    await stream.close()
    ends = [t for t in got if t.end_of_utterance]
    assert ends[-1].text == "Second part.", got
