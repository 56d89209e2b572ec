"""The call supervisor on the wire, in-process as the daemon wires it (one CallSupervisor for
the SIP CallApp and the stream server): legs report how they ended, the supervisor ends the
SIP dialog (exactly one BYE) or the stream, and counts one end reason per call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiosipua import SipRequest

from bridge.admission import Admission
from bridge.agents.echo import run_echo
from bridge.callmodel import CallInfo
from bridge.daemon.calls import DaemonCallApp
from bridge.leg import AudioLeg
from bridge.metrics import REGISTRY
from bridge.settings import Secrets, Settings, load_settings
from bridge.simulator.plivo.stream_client import PlivoStreamClient, StreamCallResult
from bridge.simulator.procs import free_port, free_rtp_range, run_daemon
from bridge.sip.server import SipServer
from bridge.stream.server import StreamServer
from bridge.supervisor import AgentRunner, CallSupervisor
from tests.daemon.test_supervision import _until
from tests.sip.corpus import SDP
from tests.sipp.support import RawSip, health, wait_for
from tests.stream.support import AUTH_TOKEN, SECRET, headers_for, tone


@dataclass
class Stack:
    settings: Settings
    calls: CallSupervisor
    app: DaemonCallApp
    sip: SipServer
    stream: StreamServer


@contextlib.asynccontextmanager
async def stack(agent: AgentRunner, **media: object) -> AsyncIterator[Stack]:
    lo, hi = free_rtp_range(10)
    settings = load_settings(None, overrides={
        "sip": {"listen_host": "127.0.0.1", "listen_port": 0, "transports": ["udp"], "t1_ms": 100},
        "media": {"rtp_port_min": lo, "rtp_port_max": hi, **media},
        "daemon": {"stream_listen": "127.0.0.1:0"},
        "plivo": {"nonce_db": ":memory:"},
    })
    calls = CallSupervisor(agent, Admission(settings.sip.max_calls))  # as bridge.daemon.main wires it
    app = DaemonCallApp(settings, calls, bind_host="127.0.0.1")
    sip = SipServer(settings.sip, app, Secrets())
    stream = StreamServer(settings, Secrets(stream_secret=SECRET, plivo_auth_token=AUTH_TOKEN), calls)
    await sip.start()
    await stream.start()
    try:
        yield Stack(settings, calls, app, sip, stream)
    finally:
        await calls.end_all("test-end")
        await stream.stop()
        await sip.stop()


def _count(transport: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("voice_bridge_calls_total",
                                     {"transport": transport, "outcome": outcome}) or 0.0


def _answered_call(raw: RawSip, call_id: str) -> str:
    return raw.answered_call(call_id, SDP)  # blocking: run in a thread


def _byes(raw: RawSip, first_within_s: float, quiet_s: float = 1.5) -> list[SipRequest]:
    """Every BYE transaction the daemon starts (each answered 200; retransmissions of one
    transaction, same CSeq, count once), until the line is quiet for quiet_s after the first."""
    byes: dict[str, SipRequest] = {}
    wait = first_within_s
    for _ in range(100):  # bounded
        msg = raw.recv(wait)
        if msg is None:
            break
        if isinstance(msg, SipRequest) and msg.method == "BYE":
            raw.answer(msg)
            byes.setdefault(str(msg.get_header("cseq")), msg)
            wait = quiet_s
    return list(byes.values())


async def test_agent_hang_up_on_sip_sends_one_bye_and_counts_one_end_reason() -> None:
    async def hang_up_and_return(leg: AudioLeg, info: CallInfo) -> None:
        await leg.hangup("agent-ended")  # the end_call tool's word; then the agent returns

    before = _count("sip", "agent-ended"), _count("sip", "agent-finished")
    async with stack(hang_up_and_return) as s:
        with RawSip(s.sip.bound_port) as raw:
            await asyncio.to_thread(_answered_call, raw, "sup-hangup-1")
            byes = await asyncio.to_thread(_byes, raw, 5.0)
            assert len(byes) == 1, [str(b.get_header("cseq")) for b in byes]
            assert byes[0].call_id == "sup-hangup-1"
            await _until(lambda: s.calls.active() == 0)
            assert s.app.ports_in_use == 0 and s.calls.admission.active == 0
    assert (_count("sip", "agent-ended"), _count("sip", "agent-finished")) == (before[0] + 1, before[1])


async def test_rtp_timeout_ends_the_dialog_with_one_bye_and_the_media_timeout_reason() -> None:
    async def echo(leg: AudioLeg, info: CallInfo) -> None:
        await run_echo(leg)  # returns at once on LegEnded: the timeout must stay the reason

    before = _count("sip", "media-timeout"), _count("sip", "agent-finished")
    async with stack(echo, rtp_timeout_s=1.0) as s:
        with RawSip(s.sip.bound_port) as raw:
            await asyncio.to_thread(_answered_call, raw, "sup-timeout-1")  # and no RTP at all
            byes = await asyncio.to_thread(_byes, raw, 10.0)
            assert len(byes) == 1
            await _until(lambda: s.calls.active() == 0)
            assert s.app.ports_in_use == 0
    assert (_count("sip", "media-timeout"), _count("sip", "agent-finished")) == (before[0] + 1, before[1])


async def test_agent_hang_up_on_a_stream_closes_it_and_counts_the_agents_reason() -> None:
    async def greet_and_hang_up(leg: AudioLeg, info: CallInfo) -> None:
        await leg.hangup("agent-ended")

    before = _count("stream", "agent-ended"), _count("stream", "agent-finished")
    async with stack(greet_and_hang_up) as s:
        client = PlivoStreamClient(f"ws://127.0.0.1:{s.stream.bound_port}/stream", call_uuid="sup-stream-1",
                                   extra_headers=headers_for("sup-stream-1"), auth_token=AUTH_TOKEN)
        result = await client.run(tone(2000), tail_s=5.0)
        await _until(lambda: s.calls.active() == 0)
    # Without REST credentials closing the socket ends the call (the wire as before: 1000 "hangup").
    assert (result.ended_by, result.close_code, result.close_reason) == ("bridge", 1000, "hangup")
    # The agent's own reason, as on SIP (the stream path used to count every hang-up of ours as
    # agent-finished).
    assert (_count("stream", "agent-ended"), _count("stream", "agent-finished")) == (before[0] + 1, before[1])


async def test_drain_ends_sip_and_stream_calls_alike() -> None:
    async def echo(leg: AudioLeg, info: CallInfo) -> None:
        await run_echo(leg)

    before = _count("sip", "drain"), _count("stream", "drain")
    async with stack(echo) as s:
        client = PlivoStreamClient(f"ws://127.0.0.1:{s.stream.bound_port}/stream", call_uuid="sup-drain-1",
                                   extra_headers=headers_for("sup-drain-1"), auth_token=AUTH_TOKEN)
        streamed = asyncio.create_task(client.run(tone(200), tail_s=30.0))
        with RawSip(s.sip.bound_port) as raw:
            await asyncio.to_thread(_answered_call, raw, "sup-drain-2")
            await _until(lambda: s.calls.active() == 2)
            assert (s.calls.active("sip"), s.calls.active("stream")) == (1, 1)
            s.calls.draining = True
            assert s.calls.refusal() == "draining"  # both transports refuse from here
            ending = asyncio.create_task(s.calls.end_all("drain"))
            byes = await asyncio.to_thread(_byes, raw, 5.0)
            await asyncio.wait_for(ending, 10.0)
        result = await asyncio.wait_for(streamed, 10.0)
        assert len(byes) == 1
        assert (result.close_code, result.close_reason) == (1001, "drain")  # going away, from us
        assert s.calls.active() == 0 and s.calls.admission.active == 0 and s.app.ports_in_use == 0
    assert (_count("sip", "drain"), _count("stream", "drain")) == (before[0] + 1, before[1] + 1)


def test_sigterm_drains_sip_and_stream_calls_through_one_supervisor(tmp_path: Path) -> None:
    """The daemon itself: both kinds of call outlive the drain time, then the one supervisor
    ends them alike (the stream's used to be counted as an agent hang-up)."""
    stream_port = free_port(socket.SOCK_STREAM)
    env = {"VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "1", "VOICE_BRIDGE_STREAM_SECRET": SECRET,
           "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    config = f'[daemon]\nstream_listen = "127.0.0.1:{stream_port}"\n'
    with run_daemon(tmp_path, config=config, env=env, agent="echo") as daemon, RawSip(daemon.sip_port) as raw:
        raw.answered_call("drain-sip-1", SDP)
        client = PlivoStreamClient(f"ws://127.0.0.1:{stream_port}/stream", call_uuid="drain-stream-1",
                                   extra_headers=headers_for("drain-stream-1"), auth_token=AUTH_TOKEN)
        results: list[StreamCallResult] = []
        caller = threading.Thread(
            target=lambda: results.append(asyncio.run(client.run(tone(200), tail_s=30.0))))
        caller.start()
        assert wait_for(lambda: health(daemon.http)["load"]["calls"] == 2), health(daemon.http)  # type: ignore[index]
        daemon.proc.send_signal(signal.SIGTERM)
        byes = _byes(raw, 10.0)
        caller.join(20)
        assert daemon.proc.wait(20) == 0
    assert len(byes) == 1 and results and results[0].close_code == 1001, (byes, results)
    ended = [json.loads(x) for x in daemon.logs().splitlines()
             if x.startswith("{") and '"call ended"' in x and "bridge.supervisor" in x]
    outcomes = sorted((e["transport"], e["outcome"]) for e in ended)
    assert outcomes == [("sip", "drain"), ("stream", "drain")], ended
