"""Outbound calls through a SIP trunk: our INVITE client against SIPp acting as the trunk."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.admission import Admission
from bridge.agents.echo import run_echo
from bridge.callmodel import CallInfo
from bridge.daemon.calls import DaemonCallApp
from bridge.leg import AudioLeg
from bridge.settings import Secrets, load_settings
from bridge.settings.outbound import TrunkSettings
from bridge.simulator.procs import free_rtp_range
from bridge.simulator.sipp import free_udp_port, have_sipp
from bridge.sip.server import SipServer
from bridge.sip.uac import TrunkCaller
from bridge.supervisor import CallSupervisor
from tests.trunk import scenarios

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="needs SIPp")]


@dataclass
class Stack:
    server: SipServer
    app: DaemonCallApp


@contextlib.asynccontextmanager
async def sip_stack() -> AsyncIterator[Stack]:
    lo, hi = free_rtp_range(20)
    settings = load_settings(None, overrides={
        "sip": {"listen_host": "127.0.0.1", "listen_port": 0, "transports": ["udp"], "t1_ms": 100},
        "media": {"rtp_port_min": lo, "rtp_port_max": hi},
    })

    async def echo(leg: AudioLeg, info: CallInfo) -> None:
        await run_echo(leg)

    calls = CallSupervisor(echo, Admission(settings.sip.max_calls))
    app = DaemonCallApp(settings, calls, bind_host="127.0.0.1")
    server = SipServer(settings.sip, app, Secrets())
    await server.start()
    try:
        yield Stack(server, app)
    finally:
        await calls.end_all("test-end")
        await calls.wait_idle(3)
        await server.stop()


@contextlib.contextmanager
def trunk(tmp_path: Path, scenario: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    path = tmp_path / "trunk.xml"
    path.write_text(scenario)
    port = free_udp_port()
    proc = subprocess.Popen(
        ["sipp", "-sf", str(path), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-nostdin",
         "-timeout", "20s", "-timeout_error", "-mp", str(free_udp_port())],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


async def _until(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    """Teardown (closing the RTP socket, releasing its port) runs as its own task."""
    for _ in range(int(limit * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def _wait_exit(proc: subprocess.Popen[str], limit: float = 15.0) -> int:
    for _ in range(int(limit * 20)):
        rc = proc.poll()
        if rc is not None:
            return rc
        await asyncio.sleep(0.05)
    raise AssertionError("SIPp did not finish")


async def test_answered_call_runs_the_agent_and_our_bye_ends_it(tmp_path: Path) -> None:
    with trunk(tmp_path, scenarios.ANSWER) as (port, proc):
        await asyncio.sleep(0.3)  # SIPp binds its socket
        async with sip_stack() as stack:
            trunk_settings = TrunkSettings(host=f"127.0.0.1:{port}")
            caller = TrunkCaller(stack.server, trunk_settings, None, ["PCMU", "PCMA"])
            result = await caller.call("+919876543210", "+911140001234")
            assert result.outcome == "answered", result
            assert result.call is not None and result.call.media is not None
            assert result.call.media.codec == "PCMA"  # the trunk answered with PCMA only
            assert result.call.media.dtmf_payload_type == 101
            assert stack.app.active_calls == 1
            await asyncio.sleep(0.5)
            await result.call.hangup("normal")
            assert await stack.app.supervisor.wait_idle(3)
            assert stack.app.ports_in_use == 0
        out = proc.communicate(timeout=10)
        assert await _wait_exit(proc) == 0, out


async def test_busy_is_reported_and_frees_the_media_port(tmp_path: Path) -> None:
    with trunk(tmp_path, scenarios.BUSY) as (port, proc):
        await asyncio.sleep(0.3)
        async with sip_stack() as stack:
            caller = TrunkCaller(stack.server, TrunkSettings(host=f"127.0.0.1:{port}"), None, ["PCMU"])
            result = await caller.call("+919876543210", "+911140001234")
            assert (result.outcome, result.code) == ("busy", 486)
            await _until(lambda: stack.app.active_calls == 0 and stack.app.ports_in_use == 0)
        assert await _wait_exit(proc) == 0, proc.communicate(timeout=10)


async def test_no_answer_is_cancelled_at_the_ring_timeout(tmp_path: Path) -> None:
    with trunk(tmp_path, scenarios.NO_ANSWER) as (port, proc):
        await asyncio.sleep(0.3)
        async with sip_stack() as stack:
            caller = TrunkCaller(stack.server, TrunkSettings(host=f"127.0.0.1:{port}"), None, ["PCMU"])
            result = await caller.call("+919876543210", "+911140001234", ring_timeout_s=1.0)
            assert (result.outcome, result.code) == ("no-answer", 487), result
            await _until(lambda: stack.app.ports_in_use == 0)
        assert await _wait_exit(proc) == 0, proc.communicate(timeout=10)


async def test_proxy_challenge_is_answered_with_digest(tmp_path: Path) -> None:
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    uri = "sip:+919876543210@127.0.0.1"
    expected = md5(f"{md5('acme:trunk:s3cret')}:4f1d2c9a:{md5('INVITE:' + uri)}")
    with trunk(tmp_path, scenarios.challenge(expected)) as (port, proc):
        await asyncio.sleep(0.3)
        async with sip_stack() as stack:
            settings = TrunkSettings(host=f"127.0.0.1:{port}", user="acme")
            caller = TrunkCaller(stack.server, settings, "s3cret", ["PCMU", "PCMA"])
            result = await caller.call("+919876543210", "+911140001234")
            assert result.outcome == "answered", result
            assert result.call is not None
            await result.call.hangup("normal")
            assert await stack.app.supervisor.wait_idle(3)
        assert await _wait_exit(proc) == 0, proc.communicate(timeout=10)


async def test_stop_cancels_an_outbound_invite_still_ringing(tmp_path: Path) -> None:
    """A daemon stopping while its outbound INVITE rings CANCELs it and waits for the 487,
    instead of closing its socket and leaving the callee's phone to ring on."""
    with trunk(tmp_path, scenarios.NO_ANSWER) as (port, proc):
        await asyncio.sleep(0.3)
        async with sip_stack() as stack:
            caller = TrunkCaller(stack.server, TrunkSettings(host=f"127.0.0.1:{port}"), None, ["PCMU"])
            placing = asyncio.create_task(caller.call("+919876543210", "+911140001234", ring_timeout_s=30))
            await asyncio.sleep(0.5)  # the 180 is in
            await stack.server.stop()
            result = await asyncio.wait_for(placing, 5)
            assert (result.outcome, result.code) == ("no-answer", 487), result
            late = await caller.call("+919876543210", "+911140001234")
            assert (late.outcome, late.code) == ("failed", 503)  # no INVITE once stopping
        assert await _wait_exit(proc) == 0, proc.communicate(timeout=10)


async def test_a_200_crossing_the_stop_cancel_is_acked_and_then_byed(tmp_path: Path) -> None:
    """The callee answers as the stop's CANCEL arrives: the 200 still gets its ACK, and the
    stop BYEs the call before the socket closes (the callee is not left in a silent call)."""
    with trunk(tmp_path, scenarios.ANSWER_CROSSES_CANCEL) as (port, proc):
        await asyncio.sleep(0.3)
        async with sip_stack() as stack:
            trunk_settings = TrunkSettings(host=f"127.0.0.1:{port}")
            caller = TrunkCaller(stack.server, trunk_settings, None, ["PCMU", "PCMA"])
            placing = asyncio.create_task(caller.call("+919876543210", "+911140001234", ring_timeout_s=30))
            await asyncio.sleep(0.5)
            await stack.server.stop()
            result = await asyncio.wait_for(placing, 5)
            assert result.outcome == "answered", result
            assert stack.server.call_count == 0
        assert await _wait_exit(proc) == 0, proc.communicate(timeout=10)


@contextlib.contextmanager
def silent_trunk() -> Iterator[tuple[int, socket.socket]]:
    """A trunk that reads our INVITEs and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock.getsockname()[1], sock
    finally:
        sock.close()


def _received(sock: socket.socket) -> list[bytes]:
    out = []
    with contextlib.suppress(BlockingIOError):
        for _ in range(100):
            out.append(sock.recv(65535))
    return out


async def test_a_stop_during_the_call_set_up_sends_no_invite() -> None:
    with silent_trunk() as (port, sock):
        async with sip_stack() as stack:
            release = asyncio.Event()
            prepare = stack.app.prepare

            async def slow_prepare(call: Any) -> tuple[str, int]:
                await release.wait()  # the media port is being set up as the stop begins
                return await prepare(call)

            stack.app.prepare = slow_prepare  # type: ignore[method-assign]
            caller = TrunkCaller(stack.server, TrunkSettings(host=f"127.0.0.1:{port}"), None, ["PCMU"])
            placing = asyncio.create_task(caller.call("+919876543210", "+911140001234", ring_timeout_s=30))
            await asyncio.sleep(0.1)
            stopping = asyncio.create_task(stack.server.stop())
            await asyncio.sleep(0.1)
            assert not stopping.done()  # the stop waits for the call being placed
            release.set()
            result = await asyncio.wait_for(placing, 5)
            await asyncio.wait_for(stopping, 5)
            assert (result.outcome, result.code) == ("failed", 503), result
            await _until(lambda: stack.app.ports_in_use == 0)
        assert _received(sock) == []


async def test_an_invite_never_answered_at_the_stop_returns_a_result_and_frees_its_port() -> None:
    """No provisional, so no CANCEL may go (§9.1); the stop's bound closes the transaction:
    the call still ends with a result (not a CancelledError) and frees its media port."""
    with silent_trunk() as (port, sock):
        async with sip_stack() as stack:
            caller = TrunkCaller(stack.server, TrunkSettings(host=f"127.0.0.1:{port}"), None, ["PCMU"])
            placing = asyncio.create_task(caller.call("+919876543210", "+911140001234", ring_timeout_s=30))
            await asyncio.sleep(0.2)
            await asyncio.wait_for(stack.server.stop(), 10)
            result = await asyncio.wait_for(placing, 5)
            assert (result.outcome, result.code) == ("failed", 503), result
            await _until(lambda: stack.app.ports_in_use == 0 and stack.app.active_calls == 0)
        sent = _received(sock)
        assert sent and all(d.startswith(b"INVITE ") for d in sent)  # retransmissions, never a CANCEL
