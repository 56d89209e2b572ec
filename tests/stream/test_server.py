"""The stream leg end to end over 127.0.0.1: the Plivo simulator's WebSocket client against the
StreamServer running real agents (echo, and small agents exercising playback and barge-in)."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.agents.echo import run_echo
from bridge.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from bridge.callmodel import CallInfo
from bridge.leg import AudioFrame, AudioLeg, DtmfDigit, LegEnded, LegEvent, PlaybackDone
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.signing import sign_v3
from bridge.simulator.plivo.stream_client import PlivoStreamClient
from bridge.stream.leg import StreamLeg
from bridge.supervisor import AgentRunner as Agent
from tests.stream.support import (
    AUTH_TOKEN,
    Recorder,
    best_correlation,
    headers_for,
    rms,
    running_server,
    signed_connect,
    sim_client,
    start_stream,
    tone,
    url,
)


async def echo(leg: AudioLeg, info: CallInfo) -> None:
    await run_echo(leg)


STEADY = NetworkProfile(jitter_ms=0)


async def test_echo_agent_over_plivo_stream() -> None:
    async with running_server(echo) as server:
        # An echo cannot keep audio queued ahead, so jitter would put gaps in what comes back:
        # latency without jitter here (the playout tests keep the jitter).
        client = sim_client(server, call_uuid="call-echo", extra_headers=headers_for("call-echo"),
                            network=STEADY)
        sent = tone(600)
        result = await client.run(sent, tail_s=0.8)  # the echo crosses the network twice
    assert result.ended_by == "caller" and result.close_code == 1000
    assert result.bad_messages == 0
    # one checkpoint per playAudio (the caller may hang up with the last one still in flight)
    assert result.received["playAudio"] > 0
    assert result.received["playAudio"] - 1 <= result.received["checkpoint"] <= result.received["playAudio"]
    corr, lag = best_correlation(sent, result.heard)
    assert corr > 0.95, corr  # the caller hears their own tone back (mu-law both ways)
    assert 0 < result.network_rtt_ms and lag < 8 * (200 + result.network_rtt_ms + 40)  # lead + network
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
        headers = headers_for("call-facts", From="+919876543210", To="918035735100",
                              Direction="inbound", Agent="sales")
        client = sim_client(server, call_uuid="call-facts", extra_headers=headers)

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
        client = sim_client(server, call_uuid="call-play", extra_headers=headers_for("call-play"))
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
        client = sim_client(server, call_uuid="barge", extra_headers=headers_for("barge"))
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
            client = sim_client(server, call_uuid="call-x", extra_headers=headers)
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
        sim = sim_client(server, call_uuid="call-bad", extra_headers=headers_for("call-bad"))
        with caplog.at_level(logging.INFO):
            async with signed_connect(server) as ws:
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
        sim = sim_client(server, call_uuid="call-big", extra_headers=headers_for("call-big"))
        async with signed_connect(server) as ws:
            await ws.send(sim.start_message())
            await ws.send(json.dumps({"event": "media", "media": {"payload": "A" * 10000}}))
            with pytest.raises(ConnectionClosed) as info:
                for _ in range(50):
                    await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        # the server is fine: the next call works
        client = sim_client(server, call_uuid="call-ok", extra_headers=headers_for("call-ok"))
        result = await client.run(tone(200), tail_s=0.2)
        assert result.agent_audio_ms > 0


async def test_silent_clients_are_timed_out() -> None:
    reasons: list[str] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        async for ev in leg.events():
            if isinstance(ev, LegEnded):
                reasons.append(ev.reason)

    async with running_server(agent, stream_start_timeout_s=0.3, stream_media_timeout_s=0.3) as server:
        async with signed_connect(server) as ws:  # never sends start
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        sim = sim_client(server, call_uuid="call-quiet", extra_headers=headers_for("call-quiet"))
        async with signed_connect(server) as ws:  # starts, then goes quiet
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
        sim = sim_client(server, call_uuid="c16", extra_headers=headers_for("c16"))
        start = json.loads(sim.start_message())
        start["start"]["mediaFormat"] = {"encoding": "audio/x-l16", "sampleRate": 44100}  # not Plivo's
        async with signed_connect(server) as ws:
            await ws.send(json.dumps(start))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        # shedding load: 503 before the handshake completes
        server.supervisor.admission.overloaded = lambda: True
        with pytest.raises(InvalidStatus) as status:
            async with signed_connect(server):
                pass
        assert status.value.response.status_code == 503
        server.supervisor.admission.overloaded = lambda: False
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
                client = PlivoStreamClient(address, call_uuid=uuid, extra_headers=headers_for(uuid),
                                           auth_token=AUTH_TOKEN)
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
        client = sim_client(server, call_uuid="call-l16", extra_headers=headers_for("call-l16"),
                            encoding="audio/x-l16", network=STEADY)
        sent = tone(400)
        result = await client.run(sent, tail_s=0.8)
    corr, _ = best_correlation(sent, result.heard)
    assert corr > 0.99 and result.bad_messages == 0


async def test_wideband_l16_16k_stream_in_and_out() -> None:
    formats: list[str] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        assert isinstance(leg, StreamLeg)
        formats.append(f"{leg.media_format.encoding};rate={leg.media_format.sample_rate}")
        await run_echo(leg)

    async with running_server(agent) as server:
        client = sim_client(server, call_uuid="call-wb", extra_headers=headers_for("call-wb"),
                            encoding="audio/x-l16", sample_rate=16000)
        sent = tone(400)
        result = await client.run(sent, tail_s=0.8)
    assert formats == ["audio/x-l16;rate=16000"]
    # playAudio carried sampleRate 16000 (anything else counts as a bad message)
    assert result.bad_messages == 0 and result.received["playAudio"] > 0
    # Resampled twice each way, so compare what matters: the tone came back, at its pitch.
    assert result.agent_audio_ms >= 350
    heard = np.frombuffer(result.heard, dtype="<i2").astype(np.float64)
    peak_hz = np.argmax(np.abs(np.fft.rfft(heard))) * 8000 / len(heard)
    assert abs(peak_hz - 440) < 10, peak_hz


async def test_stop_ends_calls_in_progress() -> None:
    agent = Recorder()
    async with running_server(agent) as server:
        client = sim_client(server, call_uuid="call-stop", extra_headers=headers_for("call-stop"))
        task = asyncio.create_task(client.run(b"", tail_s=10.0))
        for _ in range(100):
            if server.active_calls:
                break
            await asyncio.sleep(0.02)
        await server.stop(drain_timeout_s=0.1)
        result = await asyncio.wait_for(task, 10)
    assert agent.ended == ["shutdown"] and result.ended_by == "bridge"


async def test_upgrade_must_carry_plivos_signature_once() -> None:
    async with running_server(echo) as server:
        with pytest.raises(InvalidStatus) as status:
            async with connect(url(server)):  # unsigned
                pass
        assert status.value.response.status_code == 403
        forged = sign_v3("not-the-auth-token", "GET", f"https://127.0.0.1:{server.bound_port}/stream")
        with pytest.raises(InvalidStatus) as status:
            async with connect(url(server), additional_headers=forged):
                pass
        assert status.value.response.status_code == 403
        signed = sign_v3(AUTH_TOKEN, "GET", f"https://127.0.0.1:{server.bound_port}/stream")
        async with connect(url(server), additional_headers=signed):
            pass
        with pytest.raises(InvalidStatus) as status:  # the same upgrade replayed
            async with connect(url(server), additional_headers=signed):
                pass
        assert status.value.response.status_code == 403
        ma = sign_v3(AUTH_TOKEN, "GET", f"https://127.0.0.1:{server.bound_port}/stream")
        ma = {"X-Plivo-Signature-Ma-V3": ma["X-Plivo-Signature-V3"],
              "X-Plivo-Signature-V3-Nonce": ma["X-Plivo-Signature-V3-Nonce"]}
        async with connect(url(server), additional_headers=ma):  # subaccount app, main token
            pass


async def test_a_token_admits_one_stream_and_only_with_its_facts() -> None:
    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        await run_echo(leg)

    async with running_server(agent) as server:
        headers = headers_for("call-once", From="+919876543210")
        first = await sim_client(server, call_uuid="call-once", extra_headers=headers).run(tone(100),
                                                                                          tail_s=0.1)
        assert first.ended_by == "caller"
        again = await sim_client(server, call_uuid="call-once", extra_headers=headers).run(tone(100),
                                                                                          tail_s=2)
        assert again.ended_by == "bridge" and again.close_code == 1008 and again.close_reason.endswith("used")
        swapped = headers.replace("%2B919876543210", "%2B14155550100")  # another caller, same token
        forged = await sim_client(server, call_uuid="call-other", extra_headers=swapped).run(b"", tail_s=2)
        assert forged.ended_by == "bridge" and forged.close_code == 1008
        assert server.refused == 2


async def test_dtmf_goes_out_on_the_stream_as_send_dtmf() -> None:
    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        await leg.send_dtmf("12#")
        await leg.send_dtmf("x")  # not a DTMF digit: logged, nothing sent
        async for ev in leg.events():
            if isinstance(ev, LegEnded):
                return

    async with running_server(agent) as server:
        result = await sim_client(server, call_uuid="call-dtmf", extra_headers=headers_for("call-dtmf")).run(
            b"", tail_s=0.6)
    assert result.dtmf_received == ["1", "2", "#"] and result.bad_messages == 0


async def test_media_reach_the_leg_in_order_however_framed_and_stop_ends_the_call() -> None:
    """Whole text messages are taken as they arrive (the fast path), fragmented ones and the
    rest through the socket's queue: the frames still reach the leg in the order sent."""
    agent = Recorder()
    sent = [tone(20, freq=300.0 + 100 * i) for i in range(6)]
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-order", extra_headers=headers_for("call-order"))
        async with signed_connect(server) as ws:
            await start_stream(ws, sim, agent)  # the call is up
            # all in one write (websockets' sans-I/O layer), so that the server reads them at once
            proto = ws.protocol
            for i, pcm in enumerate(sent):
                text = sim.media_message(pcm, i + 1).encode()
                if i in (1, 4):  # one message in 3 frames
                    proto.send_text(text[:40], fin=False)
                    proto.send_continuation(text[40:90], fin=False)
                    proto.send_continuation(text[90:], fin=True)
                elif i == 3:  # left to the reader, then media
                    proto.send_text(b'{"event":"mystery"}')
                    proto.send_text(text)
                else:
                    proto.send_text(text)
            assert ws.transport is not None
            ws.transport.write(b"".join(proto.data_to_send()))
            await ws.send(json.dumps({"event": "stop"}))
            await agent.until_ended()
    assert agent.ended == ["stop"]
    received = [ulaw_to_pcm(pcm_to_ulaw(p)) for p in sent]  # the mu-law round trip
    assert agent.frames == received


async def test_a_message_the_leg_fails_on_is_logged_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while the leg handles a message (in the socket's data_received or in the
    reader task) must not end the call: logged, that message lost, the next ones handled."""
    original = StreamLeg.on_message
    calls = [0]

    def flaky(self: StreamLeg, msg: object) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("boom")
        original(self, msg)  # type: ignore[arg-type]

    monkeypatch.setattr(StreamLeg, "on_message", flaky)
    agent = Recorder()
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-flaky", extra_headers=headers_for("call-flaky"))
        with caplog.at_level(logging.ERROR):
            async with signed_connect(server) as ws:
                await ws.send(sim.start_message())
                for i in range(4):
                    await ws.send(sim.media_message(tone(20), i + 1))
                for _ in range(500):  # bounded: 10 s on a slow machine
                    if len(agent.frames) >= 3:
                        break
                    await asyncio.sleep(0.02)
                assert server.active_calls == 1
    assert len(agent.frames) == 3
    assert "stream message handling failed" in caplog.text
