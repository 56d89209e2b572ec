"""Deepgram Flux (listen v2): our client (the request deepgram-sdk builds, on our own socket) and
the SDK itself against the fake /v2/listen."""

from __future__ import annotations

import asyncio

import pytest

from bridge.providers.base import EAGER_END_OF_TURN, TURN_RESUMED, ProviderError, Transcript
from bridge.providers.factory import build_providers
from bridge.providers.stt.flux_stt import FluxStream, FluxSTT
from bridge.settings import Secrets, Settings
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY

from .conftest import assert_clean, silence, speech


def make(url: str, **kw: object) -> FluxSTT:
    opts: dict[str, object] = {"api_key": DEEPGRAM_KEY, "url": url, "connect_timeout_s": 2.0}
    opts.update(kw)
    return FluxSTT(**opts)  # type: ignore[arg-type]


async def push(stream: FluxStream, audio: bytes) -> None:
    for i in range(0, len(audio), 320):
        await stream.send(audio[i : i + 320])


async def until_end(stream: FluxStream, limit_s: float = 5.0) -> list[Transcript]:
    got: list[Transcript] = []
    async with asyncio.timeout(limit_s):
        async for t in stream.transcripts():
            got.append(t)
            if t.end_of_utterance:
                break
    return got


def _sent(cloud: FakeCloud, **match: object) -> list[dict[str, object]]:
    sent = cloud.flux.journal.of("sent")
    return [e.data for e in sent if all(e.data.get(k) == v for k, v in match.items())]


async def test_turn_ends_on_end_of_turn_with_the_whole_transcript(cloud: FakeCloud) -> None:
    cloud.flux.script.append("I would like to book a table")
    stream = await make(cloud.http_url).open()
    await push(stream, speech(1600) + silence(500))
    got = await until_end(stream)
    await stream.close()
    assert got[-1] == Transcript("I would like to book a table", True, True, 0.9)
    interims = [t.text for t in got[:-1]]
    assert interims and all("I would like to book a table".startswith(t) for t in interims)
    assert [e["type"] for e in _sent(cloud)][:2] == ["Connected", "TurnInfo"]
    assert _sent(cloud, event="EndOfTurn")[0]["trigger"] == "model"
    query = cloud.flux.journal.of("request")[0].data["query"]
    assert query["model"] == "flux-general-en" and query["encoding"] == "mulaw"
    assert query["sample_rate"] == "8000" and "eager_eot_threshold" not in query


async def test_eager_end_of_turn_then_turn_resumed(cloud: FakeCloud) -> None:
    cloud.flux.script.append("Wait let me check my calendar")
    stream = await make(cloud.http_url, eager_eot_threshold=0.5, eot_threshold=0.8).open()
    await push(stream, speech(800) + silence(250) + speech(900) + silence(500))
    got = await until_end(stream)
    await stream.close()
    events = [t.event for t in got if t.event]
    assert events == [EAGER_END_OF_TURN, TURN_RESUMED, EAGER_END_OF_TURN]
    assert got[-1].end_of_utterance and got[-1].text == "Wait let me check my calendar"
    query = cloud.flux.journal.of("request")[0].data["query"]
    assert query["eager_eot_threshold"] == "0.5" and query["eot_threshold"] == "0.8"


async def test_eager_end_of_turn_precedes_end_of_turn_by_the_set_delays(cloud: FakeCloud) -> None:
    """Eager first (medium confidence), EndOfTurn later with the same transcript; the delays
    are the fake's settings, counted in audio after the last speech."""
    cloud.flux.script.append("Are you open on Saturday")
    cloud.flux.eager_eot_after_ms, cloud.flux.eot_after_ms = 100, 450
    stream = await make(cloud.http_url, eager_eot_threshold=0.4).open()
    await push(stream, speech(800) + silence(700))
    got = await until_end(stream)
    await stream.close()
    eager = [t for t in got if t.event == EAGER_END_OF_TURN]
    assert len(eager) == 1 and eager[0].text == got[-1].text == "Are you open on Saturday"
    ends = {e["event"]: float(str(e["audio_end"])) for e in _sent(cloud, type="TurnInfo")
            if e["event"] in ("EagerEndOfTurn", "EndOfTurn")}
    assert ends["EagerEndOfTurn"] == pytest.approx(0.8 + 0.100, abs=0.03)
    assert ends["EndOfTurn"] == pytest.approx(0.8 + 0.450, abs=0.03)


async def test_force_end_turn_ends_the_turn_manually(cloud: FakeCloud) -> None:
    cloud.flux.script.append("Yes")
    stream = await make(cloud.http_url).open()
    await push(stream, speech(400) + silence(100))
    await until_first(stream)
    await stream.finalize()
    got = await until_end(stream)
    await stream.close()
    assert got[-1] == Transcript("Yes", True, True, 0.9)
    assert _sent(cloud, event="EndOfTurn")[0]["trigger"] == "manual"


async def until_first(stream: FluxStream) -> Transcript:
    async with asyncio.timeout(5):
        async for t in stream.transcripts():
            return t
    raise AssertionError("no transcript")


async def test_force_end_turn_without_a_turn_is_answered_by_the_client(cloud: FakeCloud) -> None:
    stream = await make(cloud.http_url).open()
    await push(stream, silence(300))
    await stream.finalize()
    got = await until_end(stream)
    await cloud.flux.journal.wait_for(lambda j: j.count("force_end_unanswered") == 1)
    await stream.close()
    assert got == [Transcript("", True, True, 0.0)]


async def until_read(stream: FluxStream) -> None:
    """Until the client has handled a TurnInfo (so every message before it too)."""
    for _ in range(500):  # bounded: 5 s
        if stream._got_result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no TurnInfo handled")


async def collect_ends(stream: FluxStream, ends: int, limit_s: float = 5.0) -> list[Transcript]:
    got: list[Transcript] = []
    async with asyncio.timeout(limit_s):
        async for t in stream.transcripts():
            got.append(t)
            if sum(1 for g in got if g.end_of_utterance) >= ends:
                break
    return got


async def test_updates_between_turns_open_no_turn(cloud: FakeCloud) -> None:
    """Debt (DESIGN, Known debts): Flux sends Update about every 0.25 s of audio "regardless of
    transcript updates" (its state page), so between turns too. The client took any TurnInfo
    but EndOfTurn for an open turn: a ForceEndTurn sent then (the engine's, for a backchannel)
    was counted as owed, no end came for it, and the next real EndOfTurn was taken as its
    answer. A turn opens on StartOfTurn only."""
    cloud.flux.updates_outside_turns = True
    cloud.flux.script.append("Yes please")
    stream = await make(cloud.http_url).open()
    await push(stream, silence(600))
    await until_read(stream)  # an Update between turns reached the client
    await stream.finalize()  # no turn open: Flux owes nothing (and the fake sends nothing)
    await push(stream, speech(600) + silence(500))
    got = await collect_ends(stream, 2)
    await push(stream, silence(300))
    await cloud.flux.journal.wait_for(
        lambda j: any(e.data.get("turn_index") == 1 for e in j.of("sent"))
    )
    await stream.close()
    assert [t for t in got if t.end_of_utterance] == [
        Transcript("", True, True, 0.0), Transcript("Yes please", True, True, 0.9)
    ]
    assert cloud.flux.journal.count("force_end_unanswered") == 1
    infos = [(e["event"], e["turn_index"], e["text"]) for e in _sent(cloud, type="TurnInfo")]
    start = infos.index(("StartOfTurn", 0, ""))
    # documented sequence: Updates with nothing said, then the turn, then the index moves on
    assert start >= 2 and all(i == ("Update", 0, "") for i in infos[:start])
    end = next(n for n, i in enumerate(infos) if i[0] == "EndOfTurn")
    assert infos[end] == ("EndOfTurn", 0, "Yes please")
    assert infos[end + 1:] and all(i == ("Update", 1, "") for i in infos[end + 1:])


async def test_late_manual_end_of_turn_after_a_local_answer_ends_nothing() -> None:
    """ForceEndTurn while the client saw no turn, but Flux's StartOfTurn was on its way: Flux
    ends that turn (manual) after the client answered the ForceEndTurn itself (on the Pong: the
    socket is alive and Flux read it, not yet processed it). That EndOfTurn answers the same
    ForceEndTurn and must not end the next turn too."""
    s = FluxStream(FluxSTT(api_key="k"))
    s._conn = conn = _RecordingSocket()  # type: ignore[assignment]
    await s.finalize()  # sent, no turn: answered here once the Pong comes
    assert s._queue.empty()
    await conn.pong()
    assert s._queue.get_nowait() == Transcript("", True, True, 0.0)
    s._handle({"type": "TurnInfo", "event": "StartOfTurn", "transcript": ""})
    s._handle({"type": "TurnInfo", "event": "EndOfTurn", "trigger": "manual", "transcript": "Um",
               "end_of_turn_confidence": 0.9})
    assert s._queue.get_nowait() == Transcript("Um", True, False, 0.9)  # words kept, no end
    s._handle({"type": "TurnInfo", "event": "StartOfTurn", "transcript": ""})
    s._handle({"type": "TurnInfo", "event": "EndOfTurn", "trigger": "model", "transcript": "Hi",
               "end_of_turn_confidence": 0.9})
    assert s._queue.get_nowait() == Transcript("Hi", True, True, 0.9)
    assert s._queue.empty()


async def test_a_second_force_end_turn_before_the_end_of_turn_is_answered_by_the_client() -> None:
    """ForceEndTurn ends the open turn (state machine: TurnOngoing -> Initial); a second one
    before its EndOfTurn arrives finds no turn and gets no EndOfTurn of its own, and an event
    of the ended turn still on its way does not reopen it."""
    s = FluxStream(FluxSTT(api_key="k"))
    s._conn = conn = _RecordingSocket()  # type: ignore[assignment]
    s._handle({"type": "TurnInfo", "event": "StartOfTurn", "transcript": ""})
    await s.finalize()  # owed: Flux ends the turn with a manual EndOfTurn
    assert s._queue.empty()
    s._handle({"type": "TurnInfo", "event": "EagerEndOfTurn", "transcript": "Yes"})  # on its way
    await s.finalize()  # nothing open: answered here (on the Pong)
    await conn.pong()
    s._handle({"type": "TurnInfo", "event": "EndOfTurn", "trigger": "manual", "transcript": "Yes",
               "end_of_turn_confidence": 0.9})
    got = [s._queue.get_nowait() for _ in range(s._queue.qsize())]
    assert [t for t in got if t.end_of_utterance] == [
        Transcript("", True, True, 0.0), Transcript("Yes", True, True, 0.9)
    ]


async def test_an_end_of_turn_before_the_pong_answers_the_force_end_turn() -> None:
    """The other order (Flux processed the ForceEndTurn before its frontend answered the Ping
    sent after it): the turn whose StartOfTurn was on its way ends before the Pong. That end is
    the ForceEndTurn's answer, words and all; the Pong then answers nothing more."""
    s = FluxStream(FluxSTT(api_key="k"))
    s._conn = conn = _RecordingSocket()  # type: ignore[assignment]
    await s.finalize()
    s._handle({"type": "TurnInfo", "event": "StartOfTurn", "transcript": ""})
    s._handle({"type": "TurnInfo", "event": "EndOfTurn", "trigger": "manual", "transcript": "Um",
               "end_of_turn_confidence": 0.9})
    await conn.pong()
    got = [s._queue.get_nowait() for _ in range(s._queue.qsize())]
    assert got == [Transcript("Um", True, True, 0.9)]


class _RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[object] = []
        self.pings: list[asyncio.Future[float]] = []

    async def ping(self) -> asyncio.Future[float]:
        self.pings.append(asyncio.get_running_loop().create_future())
        return self.pings[-1]

    async def pong(self) -> None:
        """The Pong to every Ping so far (RFC 6455: a Pong answers the Pings before it)."""
        for ping in self.pings:
            if not ping.done():
                ping.set_result(0.0)
        await asyncio.sleep(0)

    async def send_media(self, message: bytes) -> None:
        self.sent.append(len(message))

    async def send_force_end_turn(self) -> None:
        self.sent.append("ForceEndTurn")


def test_a_reconnect_owes_one_end_of_turn_for_the_lost_sockets_force_end_turns() -> None:
    """Two ForceEndTurn owed when the socket dropped (one per turn). The new socket gets the
    replay and one ForceEndTurn: one EndOfTurn is owed, the client answers the other."""
    s = FluxStream(FluxSTT(api_key="k"))
    s._replay.append(b"\xff" * 800)  # the turns' audio, kept for the replay (sent before them)
    for _ in range(2):
        s._handle({"type": "TurnInfo", "event": "StartOfTurn", "transcript": ""})
        asyncio.run(s.finalize())
    conn = _RecordingSocket()
    asyncio.run(s._resume(conn, s._replay.reconnected()))  # type: ignore[arg-type]
    assert conn.sent == [800, "ForceEndTurn"]
    assert s._queue.get_nowait() == Transcript("", True, True, 0.0) and s._queue.empty()
    s._handle({"type": "TurnInfo", "event": "StartOfTurn", "transcript": ""})
    s._handle({"type": "TurnInfo", "event": "EndOfTurn", "trigger": "manual", "transcript": "Hi",
               "end_of_turn_confidence": 0.9})
    assert s._queue.get_nowait() == Transcript("Hi", True, True, 0.9)
    assert s._force_owed == 0


async def test_trailing_off_turn_ends_by_timeout(cloud: FakeCloud) -> None:
    cloud.flux.script.append("Well I was thinking maybe...")
    stream = await make(cloud.http_url, eot_timeout_ms=900).open()
    await push(stream, speech(1200) + silence(1000))
    got = await until_end(stream)
    await stream.close()
    assert got[-1].end_of_utterance and got[-1].text == "Well I was thinking maybe..."
    assert _sent(cloud, event="EndOfTurn")[0]["trigger"] == "timeout"


async def test_error_frame_fails_the_stream(cloud: FakeCloud) -> None:
    cloud.flux.error = ("INTERNAL_SERVER_ERROR", "Something went wrong.")
    stream = await make(cloud.http_url).open()
    await push(stream, speech(100))
    with pytest.raises(ProviderError) as info:
        await until_end(stream)
    await stream.close()
    assert "INTERNAL_SERVER_ERROR" in str(info.value)
    assert_clean(info.value)


async def test_silence_keeps_an_idle_socket_open(cloud: FakeCloud) -> None:
    cloud.flux.idle_timeout_s = 0.4
    stream = await make(cloud.http_url, keepalive_s=0.1).open()
    await asyncio.sleep(1.2)
    assert cloud.flux.journal.count("idle_closed") == 0 and stream.reconnects == 0
    await stream.close()


async def test_idle_close_reconnects_and_replays(cloud: FakeCloud) -> None:
    cloud.flux.idle_timeout_s = 0.3
    cloud.flux.script.append("After the idle close")
    stream = await make(cloud.http_url, keepalive_s=5.0).open()
    await cloud.flux.journal.wait_for(lambda j: j.count("request") >= 2)
    cloud.flux.idle_timeout_s = 10.0
    await push(stream, speech(1200) + silence(500))
    got = await until_end(stream)
    await stream.close()
    assert got[-1].text == "After the idle close" and stream.reconnects >= 1


async def test_bad_model_and_thresholds_are_refused(cloud: FakeCloud) -> None:
    for kw in ({"model": "nova-3"}, {"eager_eot_threshold": 0.9, "eot_threshold": 0.6}):
        with pytest.raises(ProviderError) as info:
            await make(cloud.http_url, **kw).open()
        assert not info.value.retryable and "400" in str(info.value)
        assert_clean(info.value)


async def test_selected_by_the_settings(cloud: FakeCloud) -> None:
    stt_settings = {
        "providers": ["deepgram-flux"], "deepgram_url": cloud.http_url, "flux_eager_eot_threshold": 0.4
    }
    settings = Settings.model_validate({"stt": stt_settings})
    providers = build_providers(settings, Secrets(deepgram_api_key=DEEPGRAM_KEY))  # type: ignore[arg-type]
    stt = providers.stt[0]
    assert isinstance(stt, FluxSTT) and stt.options["eager_eot_threshold"] == 0.4


async def test_configure_is_answered_with_success_or_failure(cloud: FakeCloud) -> None:
    """Mid-stream Configure (the SDK's send_configure): thresholds accepted or refused."""
    from deepgram import AsyncDeepgramClient
    from deepgram.listen.v2.types import ListenV2ConfigureFailure, ListenV2ConfigureSuccess, ListenV2Connected

    from bridge.providers.stt.deepgram_stt import environment

    client = AsyncDeepgramClient(api_key=DEEPGRAM_KEY, environment=environment(cloud.http_url))
    async with client.listen.v2.connect(model="flux-general-en", encoding="mulaw", sample_rate=8000) as conn:
        async with asyncio.timeout(5):
            assert isinstance(await conn.recv(), ListenV2Connected)
            await conn.send_configure({"type": "Configure", "thresholds": {"eager_eot_threshold": 0.4}})
            ok = await conn.recv()
            await conn.send_configure(
                {"type": "Configure", "thresholds": {"eager_eot_threshold": 0.9, "eot_threshold": 0.6}}
            )
            refused = await conn.recv()
        await conn.send_close_stream()
    assert isinstance(ok, ListenV2ConfigureSuccess) and ok.sequence_id == 1
    assert isinstance(refused, ListenV2ConfigureFailure) and refused.sequence_id == 2


def test_query_and_control_messages_are_the_ones_the_sdk_sends() -> None:
    """Flux's socket is ours (deepgram_live.py), not listen.v2.connect: the same query string
    and the same ForceEndTurn / CloseStream bytes as the SDK's send methods."""
    import json
    import urllib.parse

    from deepgram.core.jsonable_encoder import jsonable_encoder
    from deepgram.core.query_encoder import encode_query
    from deepgram.listen.v2.types import ListenV2CloseStream, ListenV2ForceEndTurn

    from bridge.providers.stt import deepgram_live
    from bridge.providers.stt.deepgram_live import query_string

    options = FluxSTT(api_key="k", eot_threshold=0.7, eager_eot_threshold=0.5).options
    assert query_string(options) == urllib.parse.urlencode(encode_query(jsonable_encoder(options)))
    assert "eager_eot_threshold=0.5" in query_string(options)
    assert deepgram_live._FORCE_END_TURN == json.dumps(ListenV2ForceEndTurn(type="ForceEndTurn").dict())
    assert deepgram_live._CLOSE_STREAM == json.dumps(ListenV2CloseStream(type="CloseStream").dict())


async def test_socket_offers_no_compression_and_still_ends_turns(cloud: FakeCloud) -> None:
    cloud.flux.script.append("No deflate here.")
    stream = await make(cloud.http_url).open()
    await push(stream, silence(100) + speech(700) + silence(600))
    got = await until_end(stream)
    await stream.close()
    assert got[-1] == Transcript("No deflate here.", True, True, 0.9)
    request = cloud.flux.journal.of("request")[0].data
    assert "permessage-deflate" not in request["extensions"]
    assert request["query"]["encoding"] == "mulaw" and request["query"]["model"] == "flux-general-en"


async def test_chunks_of_several_frames_end_the_turn_as_frames_do(cloud: FakeCloud) -> None:
    """80 ms chunks (Flux's recommended size, what the driver sends by default) are one
    message each and end the turn with the same transcript as 20 ms frames."""
    cloud.flux.script.append("Four frames a message.")
    stream = await make(cloud.http_url).open()
    audio = silence(80) + speech(720) + silence(640)
    for i in range(0, len(audio), 1280):
        await stream.send(audio[i : i + 1280])
    got = await until_end(stream)
    await stream.close()
    assert got[-1].text == "Four frames a message." and got[-1].end_of_utterance


def test_turn_info_without_an_event_is_skipped() -> None:
    s = FluxStream(FluxSTT(api_key="k"))  # no socket needed to handle a message
    s._handle({"type": "TurnInfo", "transcript": "hi"})  # no event
    s._handle({"type": "TurnInfo", "event": None, "transcript": "hi"})
    assert s._queue.empty()


def test_an_odd_field_does_not_lose_the_end_of_turn() -> None:
    """Each field is read on its own: a null transcript, a bad or non-finite number still
    end the turn (before, one bad field skipped the whole EndOfTurn)."""
    s = FluxStream(FluxSTT(api_key="k"))
    s._handle({"type": "TurnInfo", "event": "EndOfTurn", "transcript": None, "audio_window_end": "x",
               "end_of_turn_confidence": None})
    assert s._queue.get_nowait() == Transcript("", True, True, 0.0)
    s._handle({"type": "TurnInfo", "event": "EndOfTurn", "transcript": "Yes.",
               "audio_window_end": float("nan"), "end_of_turn_confidence": float("inf")})
    assert s._queue.get_nowait() == Transcript("Yes.", True, True, 0.0)
    s._handle({"type": "TurnInfo", "event": "EndOfTurn", "transcript": " Yes. ", "audio_window_end": 1.0,
               "end_of_turn_confidence": 0.9})
    assert s._queue.get_nowait() == Transcript("Yes.", True, True, 0.9)


async def test_a_force_end_turn_while_closing_is_answered_at_once() -> None:
    """Closing, no socket: nothing more will come from Flux, and nothing can prove the socket
    alive (no Ping): the client answers the ForceEndTurn itself, as it always did."""
    s = FluxStream(FluxSTT(api_key="k"))
    s._closing = True
    await s.finalize()
    assert s._queue.get_nowait() == Transcript("", True, True, 0.0)


async def test_a_force_end_turn_answered_on_its_pong_leaves_the_owed_ones_place() -> None:
    """A ForceEndTurn owed for an open turn, then more audio and one with no turn open, which
    its Pong answers; then the socket drops. The reconnect resends the owed one where IT was
    sent, not where the answered one was: the audio after it is the next turn's."""
    s = FluxStream(FluxSTT(api_key="k"))
    s._conn = conn = _RecordingSocket()  # type: ignore[assignment]
    s._replay.append(b"\xff" * 800)
    s._handle({"type": "TurnInfo", "event": "StartOfTurn", "transcript": ""})
    await s.finalize()  # owed: its EndOfTurn is due
    s._replay.append(b"\xff" * 800)
    await s.finalize()  # no turn open in our view: answered on the Pong
    await conn.pong()
    assert s._queue.get_nowait() == Transcript("", True, True, 0.0)
    new = _RecordingSocket()
    await s._resume(new, s._replay.reconnected())  # type: ignore[arg-type]
    assert new.sent == [800, "ForceEndTurn", 800]


async def test_finalize_on_a_closed_stream_answers_without_raising() -> None:
    """finalize() after close() (a sender still draining its last chunk at a call's end or a
    failover): no socket, nothing will come. It must keep its promise (an end, or nothing
    more once closed), not raise AssertionError from the ForceEndTurn-on-Pong path."""
    s = FluxStream(FluxSTT(api_key="k"))
    await s.close()
    await s.finalize()
