"""Flux across a reconnect, with the real client against the fake: audio spoken while the socket
is down (the reconnect's handshake held back, as a slow network would), and the engine's
ForceEndTurn sent then. The caller's words must come back as ONE end of turn: not answered
empty by the client, not lost, not delivered twice (DESIGN, Known debts: the v1 Finalize fix had
no Flux counterpart)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bridge.providers.base import Transcript
from bridge.providers.stt.deepgram_live import LiveSocket
from bridge.providers.stt.flux_stt import FluxStream, FluxSTT
from devkit.fakes import FakeCloud

from .conftest import silence, speech
from .test_flux import _sent, collect_ends, make, push

WORDS = "Book a table for two"


class HeldConnect:
    """The client's connect, held at a gate after the first socket (a slow network)."""

    def __init__(self, stt: FluxSTT) -> None:
        self.gate = asyncio.Event()
        self._connect = stt.connect
        stt.connect = self  # type: ignore[method-assign]

    async def __call__(self, stack: contextlib.AsyncExitStack) -> LiveSocket:
        await self.gate.wait()
        return await self._connect(stack)


async def open_held(cloud: FakeCloud, **kw: object) -> tuple[FluxStream, HeldConnect]:
    stt = make(cloud.http_url, max_reconnects=3, **kw)
    stream = await stt.open()
    return stream, HeldConnect(stt)


async def until_down(cloud: FakeCloud, stream: FluxStream) -> None:
    """Until the fake cut the socket and the client saw it (no socket now)."""
    await cloud.flux.journal.wait_for(lambda j: j.count("dropped") == 1)
    for _ in range(500):  # bounded: 5 s
        if stream._conn is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the client did not see the drop")


async def until_reconnected(stream: FluxStream) -> None:
    """Until the new socket got the replay (and the ForceEndTurn owed with it)."""
    for _ in range(500):  # bounded: 5 s
        if stream.reconnects == 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no reconnect")


async def rest(stream: FluxStream) -> list[Transcript]:
    """Close, and everything the stream still delivered (the queue ends at close)."""
    await stream.close()
    return [t async for t in stream.transcripts()]


def ends(got: list[Transcript]) -> list[str]:
    return [t.text for t in got if t.end_of_utterance]


@pytest.mark.parametrize("tail_ms", [200, 700], ids=["forced", "model-first"])
async def test_force_end_turn_while_down_as_the_turn_opens_is_owed_to_the_replays_turn(
    cloud: FakeCloud, tail_ms: int
) -> None:
    """The socket drops as the caller starts speaking (no StartOfTurn yet); the turn is spoken
    while no socket is open and the engine's ForceEndTurn comes then. The client answered it at
    once, empty (no turn open in its view), and the replay's EndOfTurn then ended nothing the
    engine still waited for: the words were lost. The next socket owes it: the replay and one
    ForceEndTurn; the replay's turn is its answer, ended by the ForceEndTurn (short pause) or by
    Flux itself first (long pause, the ForceEndTurn then ignored)."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.drop_after = 8 * 200 + 1  # mu-law, 8 bytes a ms: the first frame after 200 ms
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud)
    await push(stream, silence(200) + speech(100))  # the fake cuts the socket on the speech
    await until_down(cloud, stream)
    await push(stream, speech(700) + silence(tail_ms))  # the turn, while no socket is open
    await stream.finalize()  # the engine's end of turn, while no socket is open
    held.gate.set()
    got = await collect_ends(stream, 1)
    await push(stream, silence(600))
    got += await rest(stream)
    assert ends(got) == [WORDS], got
    assert stream.reconnects == 1
    trigger = "manual" if tail_ms < cloud.flux.eot_after_ms else "model"
    assert [e["trigger"] for e in _sent(cloud, event="EndOfTurn")] == [trigger]


@pytest.mark.parametrize("force", [True, False], ids=["force-end-turn", "flux-ends-it"])
async def test_force_end_turn_while_down_in_an_open_turn_gets_the_turn_once(
    cloud: FakeCloud, force: bool
) -> None:
    """StartOfTurn came, then the socket dropped mid-turn; the caller speaks on and (or not) the
    engine's ForceEndTurn comes while no socket is open. The replay reopens the turn (the fake
    hears the same words again) and one EndOfTurn carries them."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.drop_after = 8 * 300 + 1  # mu-law, 8 bytes a ms: the first frame after 300 ms
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud)
    await push(stream, speech(300))
    for _ in range(500):  # bounded: until the client read StartOfTurn
        if stream._turn_open:
            break
        await asyncio.sleep(0.01)
    assert stream._turn_open
    await push(stream, speech(100))  # the fake cuts the socket on this
    await until_down(cloud, stream)
    await push(stream, speech(400) + silence(200))
    if force:
        await stream.finalize()
    held.gate.set()
    await push(stream, silence(600))
    got = await collect_ends(stream, 1)
    got += await rest(stream)
    assert ends(got) == [WORDS], got


async def test_a_turn_ended_before_the_drop_is_not_replayed(cloud: FakeCloud) -> None:
    """The first turn ended (EndOfTurn read), then the socket dropped and the caller spoke again
    while it was down: the replay starts where that EndOfTurn's audio ended, so the new socket
    hears the second turn only: each turn's words once, in order."""
    cloud.flux.script.extend(["Hello there", "Second turn words"])
    first = speech(600) + silence(500)
    cloud.flux.faults.drop_after = len(first) // 2 + 1  # mu-law: the first audio after it
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud)
    await push(stream, first)
    got = await collect_ends(stream, 1)
    await push(stream, silence(100))  # the fake cuts the socket on this
    await until_down(cloud, stream)
    await push(stream, speech(700) + silence(500))  # the next turn, while no socket is open
    held.gate.set()
    got += await collect_ends(stream, 1)
    await push(stream, silence(300))
    got += await rest(stream)
    assert ends(got) == ["Hello there", "Second turn words"], got
    assert stream.reconnects == 1


@pytest.mark.parametrize("updates", [True, False], ids=["updates-between-turns", "silent-between-turns"])
async def test_force_end_turn_while_down_with_no_turn_in_the_replay_is_answered_after_it(
    cloud: FakeCloud, updates: bool
) -> None:
    """Only silence while the socket was down: Flux opens no turn in the replay and ignores the
    resent ForceEndTurn, so the client answers it, empty, once Flux shows it went past the
    replay (an Update between turns, or the StartOfTurn of speech after it), and before the
    next turn's end."""
    cloud.flux.updates_outside_turns = updates
    cloud.flux.script.append("After the outage")
    cloud.flux.faults.drop_after = 8 * 200 + 1
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud, replay_turn_wait_s=30.0)
    await push(stream, silence(200) + silence(100))
    await until_down(cloud, stream)
    await push(stream, silence(500))
    await stream.finalize()
    held.gate.set()
    await until_reconnected(stream)  # what follows is live audio, not the replay's
    await push(stream, silence(300) + speech(800) + silence(500))
    got = await collect_ends(stream, 2)
    got += await rest(stream)
    assert ends(got) == ["", "After the outage"], got
    assert cloud.flux.journal.count("force_end_unanswered") == 1


async def test_force_end_turn_while_down_and_nothing_after_is_answered_by_the_bound(cloud: FakeCloud) -> None:
    """Silence in the replay, no Updates between turns and the caller silent after it: nothing
    ever says Flux went past the replay, so the client answers after the replay's length plus
    ``replay_turn_wait_s``."""
    cloud.flux.faults.drop_after = 8 * 200 + 1
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud, replay_turn_wait_s=0.1)
    await push(stream, silence(300))
    await until_down(cloud, stream)
    await stream.finalize()
    held.gate.set()
    got = await collect_ends(stream, 1)
    got += await rest(stream)
    assert ends(got) == [""], got


async def test_force_end_turn_before_the_replay_is_transcribed_waits_for_its_turn(cloud: FakeCloud) -> None:
    """ForceEndTurn "ends the turn on the audio transcribed so far": a Flux still transcribing
    the replay when the resent ForceEndTurn comes finds no turn open and ignores it (the fake's
    ``transcribe_behind_ms``); the replay's turn then ends on its own, and that is the answer."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.drop_after = 8 * 200 + 1
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud, replay_turn_wait_s=30.0)
    await push(stream, silence(200) + speech(100))
    await until_down(cloud, stream)
    await push(stream, speech(700) + silence(200))
    await stream.finalize()
    cloud.flux.transcribe_behind_ms = 1500  # the next socket lags the replay
    held.gate.set()
    await until_reconnected(stream)
    await cloud.flux.journal.wait_for(lambda j: j.count("force_end_unanswered") == 1)
    await push(stream, silence(2000))  # live audio: the fake transcribes the replay meanwhile
    got = await collect_ends(stream, 1)
    got += await rest(stream)
    assert ends(got) == [WORDS], got
    assert [e["trigger"] for e in _sent(cloud, event="EndOfTurn")] == ["model"]


async def test_force_end_turn_just_after_the_reconnect_waits_for_the_replays_turn(cloud: FakeCloud) -> None:
    """The socket drops as the caller starts speaking; the engine's ForceEndTurn comes just after
    the reconnect, while Flux is still transcribing the replay (no StartOfTurn yet, the fake's
    ``transcribe_behind_ms``). No turn is open in the client's view, but the replay may hold
    one: until Flux says, the ForceEndTurn waits for it, as one owed across the reconnect."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.drop_after = 8 * 200 + 1
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud, replay_turn_wait_s=30.0)
    await push(stream, silence(200) + speech(100))
    await until_down(cloud, stream)
    await push(stream, speech(700) + silence(200))
    cloud.flux.transcribe_behind_ms = 1500  # the next socket lags the replay
    held.gate.set()
    await until_reconnected(stream)
    await stream.finalize()  # sent on the new socket, before Flux said anything about the replay
    await cloud.flux.journal.wait_for(lambda j: j.count("force_end_unanswered") == 1)
    await push(stream, silence(2000))  # live audio: the fake transcribes the replay meanwhile
    got = await collect_ends(stream, 1)
    got += await rest(stream)
    assert ends(got) == [WORDS], got


async def test_a_force_end_turn_that_cannot_be_sent_is_owed_to_the_next_socket() -> None:
    """The socket is dead but not yet seen so (the send fails): like no socket at all, the
    ForceEndTurn is owed to the next one, not answered here."""

    class Dead:
        async def send_force_end_turn(self) -> None:
            raise ConnectionResetError

    s = FluxStream(FluxSTT(api_key="k"))
    s._conn = Dead()  # type: ignore[assignment]
    await s.finalize()
    assert s._queue.empty() and s._force_unsent == 1


class _StubSocket:
    """A socket of a scripted connector: records what is sent; ``dead`` fails every send and
    read (a socket that died under the replay)."""

    def __init__(self, dead: bool = False) -> None:
        self.dead = dead
        self.sent: list[object] = []
        self.cut = asyncio.Event()

    async def send_media(self, audio: bytes) -> None:
        if self.dead:
            raise ConnectionResetError
        self.sent.append(len(audio))

    async def send_force_end_turn(self) -> None:
        if self.dead:
            raise ConnectionResetError
        self.sent.append("ForceEndTurn")

    async def send_close_stream(self) -> None:
        self.cut.set()

    async def recv(self) -> dict[str, object]:
        if not self.dead:
            await self.cut.wait()
        raise ConnectionResetError


async def test_a_socket_that_dies_under_the_replay_leaves_it_to_the_next() -> None:
    """The new socket fails while the replay goes out: the read loop must notice it and open
    another, which gets the replay and the owed ForceEndTurn. The send's error escaped the
    session's reconnect (it caught ProviderError only) and ended its read loop: no socket
    again, the caller's words and every end of turn after lost with no error."""
    first, dying, third = _StubSocket(), _StubSocket(dead=True), _StubSocket()
    sockets = iter([first, dying, third])
    stt = FluxSTT(api_key="k", max_reconnects=3, keepalive_s=60.0)

    async def connect(stack: contextlib.AsyncExitStack) -> _StubSocket:
        return next(sockets)

    stt.connect = connect  # type: ignore[method-assign,assignment]
    stream = await stt.open()
    await stream.send(b"\x00\x10" * 400)  # 50 ms of speech-ish audio on the first socket
    first.dead = True
    await stream.finalize()  # cannot be sent: owed to the next socket
    first.cut.set()  # the client sees the drop
    for _ in range(500):  # bounded: until the third socket got the replay
        if len(third.sent) == 2:
            break
        await asyncio.sleep(0.01)
    await stream.close()
    assert stream.reconnects == 2
    assert third.sent == [400, "ForceEndTurn"]  # the replay, then the owed ForceEndTurn
    assert stream._queue.get_nowait() is None  # not answered here: the replay may hold a turn


async def test_a_force_end_turn_during_the_replay_hand_over_is_not_lost() -> None:
    """finalize() while the reconnect is sending the replay (the new socket not handed over
    yet): it waits for the hand-over, goes out on the new socket and waits with the replay's
    answer (here: none from Flux, so the bound answers it). Counted as unsent while the hand-over
    reset the count, it was lost: no end of turn ever came for it."""
    first, slow = _StubSocket(), _StubSocket()
    sockets = iter([first, slow])
    release = asyncio.Event()
    send_media = slow.send_media

    async def slow_replay(audio: bytes) -> None:
        await release.wait()
        await send_media(audio)

    slow.send_media = slow_replay  # type: ignore[method-assign]
    stt = FluxSTT(api_key="k", max_reconnects=3, keepalive_s=60.0, replay_turn_wait_s=0.05)

    async def connect(stack: contextlib.AsyncExitStack) -> _StubSocket:
        return next(sockets)

    stt.connect = connect  # type: ignore[method-assign,assignment]
    stream = await stt.open()
    await stream.send(b"\x00\x10" * 400)
    first.dead = True
    first.cut.set()  # the first socket drops; the reconnect hangs in the replay's send
    for _ in range(500):  # bounded: until the hand-over holds the audio lock
        if stream._lock.locked():
            break
        await asyncio.sleep(0.01)
    assert stream._lock.locked()
    finalize = asyncio.create_task(stream.finalize())
    await asyncio.sleep(0.05)
    release.set()
    await finalize
    got = await collect_ends(stream, 1)
    got += await rest(stream)
    assert slow.sent == [400, "ForceEndTurn"]
    assert ends(got) == [""], got


async def test_speech_begun_after_a_force_end_turn_while_down_is_not_its_answer(cloud: FakeCloud) -> None:
    """Review (review10): the engine's ForceEndTurn comes while no socket is open and nothing
    was said before it (e.g. its backchannel discard of a cough Flux does not hear as a turn);
    the caller then begins the next turn, still while the socket is down. On a healthy socket
    the ForceEndTurn finds no turn and is answered empty, then the next turn ends on its own:
    ends ``["", WORDS]``. Sent only after the whole replay, the owed ForceEndTurn ended the turn
    begun AFTER it, and that turn's EndOfTurn was taken as its answer: ``[WORDS]``, the caller's
    next turn consumed as the answer to the earlier request (a backchannel discard drops it)."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.drop_after = 8 * 200 + 1  # mu-law, 8 bytes a ms: the first frame after 200 ms
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud, replay_turn_wait_s=30.0)
    await push(stream, silence(200) + silence(100))  # the fake cuts the socket on this
    await until_down(cloud, stream)
    await push(stream, silence(300))
    await stream.finalize()  # the engine's end of turn, nothing said before it
    await push(stream, speech(700) + silence(200))  # the caller's next turn, still while down
    held.gate.set()
    await until_reconnected(stream)
    got = await collect_ends(stream, 1)
    await push(stream, silence(600))  # live: the next turn ends on its own
    got += await rest(stream)
    assert ends(got) == ["", WORDS], got


@pytest.mark.parametrize("tail_ms", [200, 700], ids=["forced", "model-first"])
async def test_a_second_drop_under_the_replay_leaves_the_owed_turn_to_the_third_socket(
    cloud: FakeCloud, tail_ms: int
) -> None:
    """Review (review10): the ForceEndTurn owed across the first reconnect is resent with the
    replay, and the second socket is cut as the replay arrives (before Flux said anything about
    it, the wait for its word armed): the third socket gets the replay and ONE ForceEndTurn,
    and the turn comes back once (not answered empty by the lost wait, not twice)."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.drop_after = 8 * 200 + 1  # mu-law, 8 bytes a ms; the replay is longer
    cloud.flux.faults.fault_times = 2
    stream, held = await open_held(cloud, replay_turn_wait_s=30.0)
    await push(stream, silence(200) + speech(100))  # the fake cuts the first socket on this
    await until_down(cloud, stream)
    await push(stream, speech(700) + silence(tail_ms))
    await stream.finalize()  # while no socket is open: owed
    held.gate.set()
    got = await collect_ends(stream, 1)
    await push(stream, silence(600))
    got += await rest(stream)
    assert ends(got) == [WORDS], got
    assert stream.reconnects == 2
    assert cloud.flux.journal.count("dropped") == 2
    assert len(_sent(cloud, event="EndOfTurn")) == 1


async def test_close_while_waiting_for_the_replays_word_ends_the_stream(cloud: FakeCloud) -> None:
    """Review (review10): close() while the resent ForceEndTurn waits for Flux's word on the
    replay (silence only, Flux says nothing, a long bound): the stream ends at once, and the
    bound's timer, cancelled, adds nothing after the stream's end."""
    cloud.flux.faults.drop_after = 8 * 200 + 1
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud, replay_turn_wait_s=30.0)
    await push(stream, silence(300))
    await until_down(cloud, stream)
    await stream.finalize()
    held.gate.set()
    await until_reconnected(stream)
    assert stream._replay_wait is not None  # waiting
    async with asyncio.timeout(5):  # bounded: far less than the 30 s wait
        got = await rest(stream)
    assert stream._replay_wait is None
    assert all(t.text == "" for t in got), got
    assert stream._queue.empty()


async def test_a_wait_for_the_replays_word_that_runs_out_while_down_does_not_answer_it(
    cloud: FakeCloud,
) -> None:
    """Review (review10): the ForceEndTurn owed across the first reconnect is resent with the
    replay and waits for Flux's word on it; the second socket is cut as the replay arrives, and
    the third is slow to open, longer than the wait's bound. The bound ran out while no socket
    was open and answered the ForceEndTurn empty, so the third socket was owed nothing: the
    replay's turn then ended on its own after the engine had closed the turn empty (its words
    outside any turn). Flux said nothing because it had no socket, not because the replay holds
    no turn: the third socket must get the replay and the owed ForceEndTurn."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.drop_after = 8 * 200 + 1  # mu-law, 8 bytes a ms; the replay is longer
    cloud.flux.faults.fault_times = 2
    stream, held = await open_held(cloud, replay_turn_wait_s=0.01)
    third = asyncio.Event()
    calls = [0]
    second_connect = held.__call__

    async def connect(stack: contextlib.AsyncExitStack) -> LiveSocket:
        calls[0] += 1
        if calls[0] == 2:  # the third socket: a slow network again
            await third.wait()
        return await second_connect(stack)

    stream._stt.connect = connect  # type: ignore[method-assign]
    await push(stream, silence(200) + speech(100))  # the fake cuts the first socket on this
    await until_down(cloud, stream)
    await push(stream, speech(300) + silence(200))
    await stream.finalize()  # while no socket is open: owed
    held.gate.set()
    for _ in range(500):  # bounded: 5 s, until the second socket was cut in its turn
        if calls[0] == 2 and stream._conn is None:
            break
        await asyncio.sleep(0.01)
    assert calls[0] == 2 and stream._conn is None
    await asyncio.sleep(0.8 + 0.5)  # past the bound (the replay's 0.8 s + 0.01 s): not a timed assertion
    third.set()
    got = await collect_ends(stream, 1)
    await push(stream, silence(600))
    got += await rest(stream)
    assert ends(got) == [WORDS], got
    assert stream.reconnects == 2


async def test_a_force_end_turn_just_after_the_reconnect_waits_for_the_whole_replay(cloud: FakeCloud) -> None:
    """Review (review10): an owed ForceEndTurn (sent while down, nothing said before it) goes
    back at its place in the replay, and the caller's next turn, begun after it while still
    down, is in the rest of the replay. The engine's next ForceEndTurn comes just after the
    reconnect, before Flux said anything (still transcribing the replay): it was sent after
    the WHOLE replay, so it is answered by the turn in the rest of it, not decided with the
    owed one at its place (both answered empty, the turn's end then a third end)."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.drop_after = 8 * 200 + 1
    cloud.flux.faults.fault_times = 1
    stream, held = await open_held(cloud, replay_turn_wait_s=30.0)
    await push(stream, silence(200) + silence(100))  # the fake cuts the socket on this
    await until_down(cloud, stream)
    await push(stream, silence(300))
    await stream.finalize()  # while down, nothing said before it
    await push(stream, speech(700) + silence(200))  # the next turn, still while down
    cloud.flux.transcribe_behind_ms = 3000  # the next socket lags the replay
    held.gate.set()
    await until_reconnected(stream)
    await stream.finalize()  # on the new socket, before Flux said anything about the replay
    await cloud.flux.journal.wait_for(lambda j: j.count("force_end_unanswered") == 2)
    await push(stream, silence(3600))  # live audio: the fake transcribes the replay meanwhile
    got = await collect_ends(stream, 2)
    got += await rest(stream)
    assert ends(got) == ["", WORDS], got
