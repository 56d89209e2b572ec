"""The stream leg end to end over 127.0.0.1: the Plivo simulator's WebSocket client against the
StreamServer running real agents (echo, and small agents exercising playback and barge-in)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.agents.echo import run_echo
from bridge.callmodel import CallInfo
from bridge.devtools.plivo_sim.stream_client import PlivoStreamClient
from bridge.leg import AudioFrame, AudioLeg, DtmfDigit, LegEnded, LegEvent, PlaybackDone
from bridge.stream.server import Agent
from tests.stream.support import best_correlation, headers_for, rms, running_server, tone, url


async def echo(leg: AudioLeg, info: CallInfo) -> None:
    await run_echo(leg)


async def test_echo_agent_over_plivo_stream() -> None:
    async with running_server(echo) as server:
        client = PlivoStreamClient(url(server), call_uuid="call-echo", extra_headers=headers_for("call-echo"))
        sent = tone(600)
        result = await client.run(sent, tail_s=0.4)
    assert result.ended_by == "caller" and result.close_code == 1000
    assert result.bad_messages == 0
    assert result.received["playAudio"] == result.received["checkpoint"] > 0
    corr, lag = best_correlation(sent, result.heard)
    assert corr > 0.95, corr  # the caller hears their own tone back (mu-law both ways)
    assert lag < 8 * 200  # within 200 ms
    assert result.played_checkpoints  # playedStream went back for what was played


async def test_call_facts_reach_the_agent_and_dtmf() -> None:
    seen: dict[str, object] = {}
    events: list[LegEvent] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        seen["info"] = info
        async for ev in leg.events():
            if not isinstance(ev, AudioFrame):
                events.append(ev)

    async with running_server(agent) as server:
        headers = headers_for("call-facts", From="ZZ2B393139383736353433323130", To="918035735100",
                              Direction="inbound", Agent="sales")
        client = PlivoStreamClient(url(server), call_uuid="call-facts", extra_headers=headers)

        def press(c: PlivoStreamClient, tick: int) -> None:
            if tick == 3:
                c.press("7")

        await client.run(b"", tail_s=0.2, on_tick=press)
    info = seen["info"]
    assert isinstance(info, CallInfo)
    assert (info.call_id, info.from_uri, info.to_uri) == ("call-facts", "+919876543210", "918035735100")
    assert info.plivo_headers["Agent"] == "sales" and "Token" not in info.plivo_headers
    assert [e.digit for e in events if isinstance(e, DtmfDigit)] == ["7"]
    assert isinstance(events[-1], LegEnded) and events[-1].reason == "socket closed"


async def test_agent_playback_heard_exactly_then_agent_hangs_up() -> None:
    result_holder: dict[str, object] = {}

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        leg.play("greeting", tone(500))
        leg.end_utterance("greeting")
        async for ev in leg.events():
            if isinstance(ev, PlaybackDone):
                result_holder["done"] = ev
                await leg.hangup("goodbye")
                return

    async with running_server(agent) as server:
        client = PlivoStreamClient(url(server), call_uuid="call-play", extra_headers=headers_for("call-play"))
        result = await client.run(b"", tail_s=5.0)
    done = result_holder["done"]
    assert isinstance(done, PlaybackDone) and done.heard_ms == 500
    assert result.ended_by == "bridge" and result.close_code == 1000
    assert result.agent_audio_ms == 500
    # paced: the bridge never ran more than lead + a chunk ahead of what Plivo played
    assert result.received["playAudio"] == 5


async def test_barge_in_sends_clear_audio_and_heard_matches_what_was_played() -> None:
    state: dict[str, int] = {}

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        leg.play("reply", tone(3000))
        leg.end_utterance("reply")
        loud = 0
        async for ev in leg.events():
            if isinstance(ev, AudioFrame) and rms(ev.pcm) > 1000:
                loud += 1
                if loud == 3 and "cleared_at" not in state:
                    leg.clear()
                    state["cleared_at"] = leg.heard_ms("reply")
            elif isinstance(ev, LegEnded):
                state["heard"] = leg.heard_ms("reply")
                return

    async with running_server(agent, stream_chunk_ms=100, stream_lead_ms=200) as server:
        client = PlivoStreamClient(url(server), call_uuid="barge", extra_headers=headers_for("barge"))
        caller = bytes(16 * 800) + tone(400, freq=300)  # silent 0.8 s, then the caller talks
        result = await client.run(caller, tail_s=0.5)
    assert result.clears == 1
    assert result.received["clearAudio"] == 1
    played = result.agent_audio_ms  # what the simulated caller actually heard of the reply
    assert 700 <= played < 3000
    # heard = last playedStream before the clear: exact to one chunk, never more than played
    assert played - 100 <= state["heard"] <= played, (played, state)


async def test_missing_or_wrong_token_refused(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        ran.append(info.call_id)

    async with running_server(agent) as server:
        for headers in ("", headers_for("another-call"), "Token=abc"):
            client = PlivoStreamClient(url(server), call_uuid="call-x", extra_headers=headers)
            with caplog.at_level(logging.WARNING):
                result = await client.run(b"", tail_s=0.5)
            assert result.ended_by == "bridge" and result.close_code == 1008
        assert server.refused == 3
    assert ran == []
    assert "stream token" in caplog.text


async def test_bad_input_is_logged_and_the_call_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    events: list[LegEvent] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        async for ev in leg.events():
            events.append(ev)

    async with running_server(agent) as server:
        sim = PlivoStreamClient(url(server), call_uuid="call-bad", extra_headers=headers_for("call-bad"))
        with caplog.at_level(logging.INFO):
            async with connect(url(server)) as ws:
                await ws.send(sim.media_message(bytes(320), 1))  # media before start
                await ws.send("{not json")
                await ws.send(sim.start_message())
                await ws.send('{"event":"mystery","x":1}')
                await ws.send(b"\x00\x01binary")
                await ws.send('{"event":"media","media":{"payload":"!!"}}')
                await ws.send(sim.media_message(bytes(320), 2))
                await ws.send('{"event":"playedStream","name":"never-sent"}')
                await ws.send(sim.media_message(bytes(320), 3))
                await asyncio.sleep(0.1)
                assert server.active_calls == 1
        for _ in range(100):
            if server.active_calls == 0:
                break
            await asyncio.sleep(0.02)
        assert server.active_calls == 0
    assert sum(isinstance(e, AudioFrame) for e in events) == 2
    assert isinstance(events[-1], LegEnded)
    assert "before start" in caplog.text and "unknown stream event" in caplog.text
    assert "bad stream message" in caplog.text


async def test_huge_frame_closes_that_stream_only() -> None:
    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        await run_echo(leg)

    async with running_server(agent, stream_max_message_bytes=4096) as server:
        sim = PlivoStreamClient(url(server), call_uuid="call-big", extra_headers=headers_for("call-big"))
        async with connect(url(server)) as ws:
            await ws.send(sim.start_message())
            await ws.send(json.dumps({"event": "media", "media": {"payload": "A" * 10000}}))
            with pytest.raises(ConnectionClosed) as info:
                for _ in range(50):
                    await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        # the server is fine: the next call works
        client = PlivoStreamClient(url(server), call_uuid="call-ok", extra_headers=headers_for("call-ok"))
        result = await client.run(tone(200), tail_s=0.2)
        assert result.agent_audio_ms > 0


async def test_silent_clients_are_timed_out() -> None:
    reasons: list[str] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        async for ev in leg.events():
            if isinstance(ev, LegEnded):
                reasons.append(ev.reason)

    async with running_server(agent, stream_start_timeout_s=0.3, stream_media_timeout_s=0.3) as server:
        async with connect(url(server)) as ws:  # never sends start
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        sim = PlivoStreamClient(url(server), call_uuid="call-quiet", extra_headers=headers_for("call-quiet"))
        async with connect(url(server)) as ws:  # starts, then goes quiet
            await ws.send(sim.start_message())
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
    assert reasons == ["media timeout"]


async def test_wrong_path_unsupported_format_and_draining() -> None:
    async with running_server(echo) as server:
        with pytest.raises(InvalidStatus) as status:
            async with connect(f"ws://127.0.0.1:{server.bound_port}/other"):
                pass
        assert status.value.response.status_code == 404
        sim = PlivoStreamClient(url(server), call_uuid="c16", extra_headers=headers_for("c16"))
        start = json.loads(sim.start_message())
        start["start"]["mediaFormat"] = {"encoding": "audio/x-l16", "sampleRate": 16000}
        async with connect(url(server)) as ws:
            await ws.send(json.dumps(start))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        server.overloaded = lambda: True  # shedding load: 503 before the handshake completes
        with pytest.raises(InvalidStatus) as status:
            async with connect(url(server)):
                pass
        assert status.value.response.status_code == 503
        server.overloaded = lambda: False
        address = url(server)
        server.begin_drain()  # the listener closes first: new streams go to the other daemons
        with pytest.raises(OSError):
            async with connect(address):
                pass


async def test_daemons_share_the_stream_port_and_a_draining_one_lets_go() -> None:
    """Two stream servers on one port (SO_REUSEPORT), as two daemons behind one stream URL:
    both take streams; once one drains, every new stream reaches the other and runs."""
    served: dict[str, list[str]] = {"a": [], "b": []}

    def agent_for(name: str) -> Agent:
        async def agent(leg: AudioLeg, info: CallInfo) -> None:
            served[name].append(info.call_id)
            await run_echo(leg)

        return agent

    async with running_server(agent_for("a")) as a:
        port = a.bound_port
        async with running_server(agent_for("b"), listen=f"127.0.0.1:{port}") as b:
            assert b.bound_port == port
            address = f"ws://127.0.0.1:{port}/stream"

            async def one_call(n: int) -> None:
                uuid = f"share-{n}"
                client = PlivoStreamClient(address, call_uuid=uuid, extra_headers=headers_for(uuid))
                result = await client.run(tone(60), tail_s=0.05)
                assert result.close_code == 1000

            for n in range(40):  # the kernel hashes each new connection to one listener
                await one_call(n)
            assert served["a"] and served["b"], served
            a.begin_drain()
            before = len(served["a"])
            for n in range(40, 50):
                await one_call(n)
            assert len(served["a"]) == before and len(served["b"]) >= 10


async def test_l16_stream() -> None:
    async with running_server(echo) as server:
        client = PlivoStreamClient(url(server), call_uuid="call-l16", extra_headers=headers_for("call-l16"),
                                   encoding="audio/x-l16")
        sent = tone(400)
        result = await client.run(sent, tail_s=0.3)
    corr, _ = best_correlation(sent, result.heard)
    assert corr > 0.99 and result.bad_messages == 0


async def test_stop_ends_calls_in_progress() -> None:
    ended: list[str] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        async for ev in leg.events():
            if isinstance(ev, LegEnded):
                ended.append(ev.reason)

    async with running_server(agent) as server:
        client = PlivoStreamClient(url(server), call_uuid="call-stop", extra_headers=headers_for("call-stop"))
        task = asyncio.create_task(client.run(b"", tail_s=10.0))
        for _ in range(100):
            if server.active_calls:
                break
            await asyncio.sleep(0.02)
        await server.stop(drain_timeout_s=0.1)
        result = await asyncio.wait_for(task, 10)
    assert ended == ["shutdown"] and result.ended_by == "bridge"
