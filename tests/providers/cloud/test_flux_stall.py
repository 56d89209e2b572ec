"""Flux's stall watchdog, with the real client against the fake: a socket whose network path
dies WITHOUT a FIN or a close (the fake holds the connection open and reads nothing: no Pong
either), or a live socket behind which Flux stops sending (Pongs still come). Flux promises no
message between turns, so silence alone proves nothing; the client notices by the WebSocket
Ping (any RFC 6455 server answers it) and, in an open turn, by the missing TurnInfo ("for
approximately every 0.25 seconds of transcribed audio", Flux's state page), then reconnects and
replays: the caller's words come back as ONE end of turn."""

from __future__ import annotations

import asyncio

from bridge.providers.stt.flux_stt import FluxStream
from devkit.fakes import FakeCloud

from .conftest import silence, speech
from .test_flux import collect_ends, make, push
from .test_flux_reconnect import ends, rest

WORDS = "Book a table for two"
# fast enough for a test, loose enough for a loaded box (a late Pong on a healthy socket would
# be one more reconnect); the defaults (2 s + 3 s, 3 s of audio) are the same rules
FAST = {"ping_interval_s": 0.3, "ping_timeout_s": 1.5, "max_reconnects": 3}


async def until_stalled(cloud: FakeCloud) -> None:
    await cloud.flux.journal.wait_for(lambda j: j.count("stalled") == 1)


async def until_reconnected(stream: FluxStream) -> None:
    for _ in range(1000):  # bounded: 10 s
        if stream.reconnects == 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no reconnect")


async def test_a_socket_dead_without_a_close_mid_turn_is_reopened_by_the_ping(cloud: FakeCloud) -> None:
    """StartOfTurn came, then the path went dead (no FIN, no close, no Pong). Before, only
    websockets' 20 s + 20 s keepalive noticed; now the Ping's bound does, and the replay gives
    the turn back, once."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.stall_after = 8 * 300 + 1  # mu-law, 8 bytes a ms: the first frame after 300 ms
    cloud.flux.faults.fault_times = 1
    stream = await make(cloud.http_url, turn_silent_s=60.0, **FAST).open()
    await push(stream, speech(300))
    for _ in range(500):  # bounded: until the client read StartOfTurn
        if stream._turn_open:
            break
        await asyncio.sleep(0.01)
    assert stream._turn_open
    await push(stream, speech(500) + silence(200))  # the rest of the turn goes into the dead path
    await until_stalled(cloud)
    await until_reconnected(stream)
    await push(stream, silence(500))
    got = await collect_ends(stream, 1)
    got += await rest(stream)
    assert ends(got) == [WORDS], got
    assert stream.reconnects == 1


async def test_a_flux_gone_quiet_behind_a_live_socket_is_reopened_in_an_open_turn(cloud: FakeCloud) -> None:
    """Pongs still come but Flux sends nothing after StartOfTurn: in an open turn a TurnInfo is
    due for about every 0.25 s of audio, so ``turn_silent_s`` of audio without one ends the
    socket; the replay gives the turn back."""
    cloud.flux.script.append(WORDS)
    cloud.flux.stall_answers_pings = True
    cloud.flux.faults.stall_after = 8 * 300 + 1
    cloud.flux.faults.fault_times = 1
    stream = await make(cloud.http_url, turn_silent_s=0.6, **FAST).open()
    await push(stream, speech(300))
    for _ in range(500):
        if stream._turn_open:
            break
        await asyncio.sleep(0.01)
    assert stream._turn_open
    # the caller goes on, in real time (20 ms frames): 0.6 s of audio and of time, no TurnInfo
    for _ in range(500):  # bounded: 10 s
        if stream.reconnects:
            break
        await push(stream, speech(20))
        await asyncio.sleep(0.02)
    await until_reconnected(stream)
    await push(stream, silence(500))
    got = await collect_ends(stream, 1)
    got += await rest(stream)
    assert ends(got) == [WORDS], got
    assert stream.reconnects == 1
    assert cloud.flux.journal.count("stalled") == 1


async def test_force_end_turn_into_a_dead_path_as_the_turn_opens_is_owed_to_the_replays_turn(
    cloud: FakeCloud,
) -> None:
    """The debt's case: the path dies as the caller starts speaking (no StartOfTurn reaches the
    client), the turn is spoken into it, and the engine's ForceEndTurn goes too: no turn open in
    the client's view. It was answered at once, empty, and the turn came back after the
    reconnect as a second end the engine no longer waited for (["", WORDS]). Now the answer
    waits for the Pong of a Ping sent after it; none comes, the socket is reopened, and the
    replay's turn is the ForceEndTurn's one answer."""
    cloud.flux.script.append(WORDS)
    cloud.flux.faults.stall_after = 8 * 200 + 1
    cloud.flux.faults.fault_times = 1
    # keepalive pings far apart: the ForceEndTurn's own Ping is what notices
    stream = await make(cloud.http_url, ping_interval_s=60.0, ping_timeout_s=1.0, max_reconnects=3).open()
    await push(stream, silence(200) + speech(700) + silence(200))
    await until_stalled(cloud)
    assert not stream._turn_open
    await stream.finalize()
    got = await collect_ends(stream, 1, limit_s=10.0)
    await push(stream, silence(600))
    got += await rest(stream)
    assert ends(got) == [WORDS], got
    assert stream.reconnects == 1


async def test_force_end_turn_with_no_turn_on_a_live_socket_is_answered_on_the_pong(cloud: FakeCloud) -> None:
    """The healthy path: nothing said, ForceEndTurn (a backchannel's) is answered empty as soon
    as the Pong shows Flux read it; no reconnect."""
    stream = await make(cloud.http_url, **FAST).open()
    await push(stream, silence(300))
    await stream.finalize()
    got = await collect_ends(stream, 1)
    got += await rest(stream)
    assert ends(got) == [""], got
    assert stream.reconnects == 0
    assert cloud.flux.journal.count("force_end_unanswered") == 1


async def test_a_burst_of_audio_in_an_open_turn_does_not_drop_a_healthy_socket(cloud: FakeCloud) -> None:
    """Caller audio can reach the client late and all at once: the Plivo stream leg passes
    frames on as they arrive (a TCP stall on the media WebSocket delivers seconds of them
    together) and the driver's feed sends whatever queued up. Flux answers audio with a
    TurnInfo per ~0.25 s it has TRANSCRIBED, so at least a round trip after it went out:
    3.5 s of audio sent in a moment, with Flux answering as it should, is not a stalled
    transcription. The socket must stay (a false reconnect re-sends the whole turn and
    delays its end); the defaults are the production bounds."""
    words = "I would like to book a table for two on Friday evening please"
    cloud.flux.script.append(words)
    stream = await make(cloud.http_url).open()
    await push(stream, speech(300))
    for _ in range(500):  # bounded: until the client read StartOfTurn
        if stream._turn_open:
            break
        await asyncio.sleep(0.01)
    assert stream._turn_open
    await push(stream, speech(3500))  # the burst, frame after frame at once
    await push(stream, silence(600))
    got = await collect_ends(stream, 1, limit_s=10.0)
    got += await rest(stream)
    assert ends(got) == [words], got
    assert stream.reconnects == 0
    assert cloud.flux.journal.count("request") == 1
