"""Deepgram v1 Finalize accounting against the fake, with the real client: a Finalize while the
socket is down (the reconnect's handshake held back, as a slow network would), and a late
reply to a Finalize the client answered itself."""

from __future__ import annotations

import asyncio
import contextlib

from bridge.providers.base import Transcript
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


class _V1Stub:
    """A v1 socket of a scripted connector: records what is sent; ``dead`` fails every send and
    read (a socket that died under the replay)."""

    def __init__(self, dead: bool = False) -> None:
        self.dead = dead
        self.sent: list[object] = []
        self.cut = asyncio.Event()

    async def send_media(self, audio: bytes) -> None:
        if self.dead:
            raise ConnectionResetError
        self.sent.append(len(audio))

    async def send_finalize(self) -> None:
        if self.dead:
            raise ConnectionResetError
        self.sent.append("Finalize")

    async def send_keep_alive(self) -> None:
        if self.dead:
            raise ConnectionResetError

    async def send_close_stream(self) -> None:
        self.cut.set()

    async def recv(self) -> dict[str, object]:
        if not self.dead:
            await self.cut.wait()
        raise ConnectionResetError


async def test_v1_a_socket_that_dies_under_the_replay_leaves_the_owed_finalize_to_the_next() -> None:
    """Review (review10): the session's reconnect now survives a replay that fails on the new
    socket (fluxdebt); for v1 too, the Finalize owed with the replay must survive it: the third
    socket gets the replay and ONE Finalize, and nothing is answered here meanwhile (the
    reply, with the words, is owed)."""
    from bridge.providers.stt.deepgram_stt import DeepgramSTT

    first, dying, third = _V1Stub(), _V1Stub(dead=True), _V1Stub()
    sockets = iter([first, dying, third])
    stt = DeepgramSTT(api_key="k", encoding="mulaw", max_reconnects=3, keepalive_s=60.0)

    async def connect(stack: contextlib.AsyncExitStack) -> _V1Stub:
        return next(sockets)

    stt.connect = connect  # type: ignore[method-assign,assignment]
    stream = await stt.open()
    first.dead = True
    await stream.send(b"\x00\x10" * 4000)  # 500 ms (4000 bytes of mu-law), not sent: dead socket
    await stream.finalize()  # cannot be sent; 500 ms to process: owed
    first.cut.set()  # the client sees the drop
    for _ in range(500):  # bounded: until the third socket got the replay and the Finalize
        if len(third.sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert third.sent == [4000, "Finalize"]
    await stream.close()
    assert stream.reconnects == 2
    assert stream._queue.get_nowait() is None  # not answered here: the reply is owed


async def test_a_finalize_deepgram_leaves_unanswered_is_answered_before_the_next_speech(
    cloud: FakeCloud,
) -> None:
    """The engine's VAD heard a cough, Deepgram no words; the endpoint's Finalize has 600 ms of
    audio to process, over the client's 250 ms guess, but Deepgram's reply "may" come and
    "typically" does when "a noticeable amount of audio" is buffered (its Finalize page): here
    none comes. The caller then speaks. Deepgram has gone past the Finalize's place without a
    from_finalize reply, so none will come: the one end of utterance each finalize() promises
    must come before the next speech's words. Counted by the engine as a late end owed to the
    cough's turn, the next end (the caller's "Hello there.") was swallowed whole."""
    cloud.deepgram.script.append("Hello there.")
    cloud.deepgram.finalize_min_ms = 2000  # a service that draws "noticeable" higher
    stream = await make(cloud.http_url).open()
    await push(stream, silence(600))
    await stream.finalize()  # owed: 600 ms to process
    await push(stream, speech(600) + silence(600))
    got = await collect_until(stream, 1, limit_s=10.0)
    assert cloud.deepgram.journal.count("finalize_unanswered") == 1
    assert got[-1] == Transcript("", True, True, 0.0), got
    assert not any(t.text for t in got), got  # nothing of the next speech before it
    got = await collect_until(stream, 1, limit_s=10.0)
    await stream.close()
    assert [t.text for t in got if t.end_of_utterance] == ["Hello there."], got


async def test_after_a_reconnect_each_owed_finalize_is_answered_in_audio_order(cloud: FakeCloud) -> None:
    """Turn 1's Finalize is owed when the socket drops (its reply still on its way); turn 2 is
    spoken while no socket is open and its Finalize is owed too. The new socket got the replay
    and ONE Finalize after all of it, and the client answered the other at once, empty, AHEAD
    of the replay's results: ends ["", "Hello there.", ...]. The engine takes the first end
    for turn 1's (which stopped waiting: a late end), so turn 2 was answered with turn 1's
    words. Each owed Finalize is resent at its own place in the replay: turn 1's end comes
    first, with its words, then turn 2's."""
    cloud.deepgram.script.extend(["Hello there.", "Second turn words."])
    cloud.deepgram.final_delay_s = 1.0  # turn 1's reply still queued when the socket drops
    first = speech(500) + silence(340)
    cloud.deepgram.faults.drop_after = len(first) // 2 + 1  # mu-law: the first audio after it
    cloud.deepgram.faults.fault_times = 1
    stt = make(cloud.http_url, max_reconnects=3)
    gate = asyncio.Event()
    connect = stt.connect

    async def held_connect(stack: contextlib.AsyncExitStack):  # type: ignore[no-untyped-def]
        await gate.wait()  # the network is slow to give us the new socket
        return await connect(stack)

    stream = await stt.open()
    stt.connect = held_connect  # type: ignore[method-assign]
    await push(stream, first)
    await stream.finalize()  # turn 1's endpoint: owed
    await push(stream, silence(100))  # the fake cuts the socket on this
    for _ in range(500):  # bounded: until the client saw the drop (no socket now)
        if stream._conn is None:
            break
        await asyncio.sleep(0.01)
    assert stream._conn is None
    await push(stream, speech(600) + silence(340))  # turn 2, while no socket is open
    await stream.finalize()  # turn 2's endpoint: owed
    gate.set()
    got = await collect_until(stream, 2, limit_s=10.0)
    await stream.close()
    assert stream.reconnects == 1
    assert [t.text for t in got if t.end_of_utterance] == ["Hello there.", "Second turn words."], got


async def test_v1_owed_finalizes_keep_their_places_when_a_socket_dies_under_the_replay() -> None:
    """Two Finalizes owed (two turns); the second socket dies under the replay: the third
    still gets each one resent at its own place, not both after all of the audio."""
    from bridge.providers.stt.deepgram_stt import DeepgramSTT

    first, dying, third = _V1Stub(), _V1Stub(dead=True), _V1Stub()
    sockets = iter([first, dying, third])
    stt = DeepgramSTT(api_key="k", encoding="mulaw", max_reconnects=3, keepalive_s=60.0)

    async def connect(stack: contextlib.AsyncExitStack) -> _V1Stub:
        return next(sockets)

    stt.connect = connect  # type: ignore[method-assign,assignment]
    stream = await stt.open()
    first.dead = True
    for _ in range(2):  # a turn of 500 ms (4000 bytes of mu-law) and its endpoint, twice
        await stream.send(b"\x00\x10" * 4000)
        await stream.finalize()
    first.cut.set()
    for _ in range(500):  # bounded: until the third socket got the replay and the Finalizes
        if len(third.sent) == 4:
            break
        await asyncio.sleep(0.01)
    assert third.sent == [4000, "Finalize", 4000, "Finalize"]
    await stream.close()
    assert stream.reconnects == 2
