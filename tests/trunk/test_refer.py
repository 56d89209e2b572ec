"""Transfer on a SIP-trunk call as Plivo documents it: REFER with the trunk's domain in
Refer-To, success only once the NOTIFY reports 200, and the trunk (not us) ends our leg.
SIPp plays the trunk; an early BYE of ours would be an unexpected message and fail it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.admission import Admission
from bridge.callmodel import CallInfo
from bridge.daemon.calls import DaemonCallApp
from bridge.daemon.transfer import transfer_for
from bridge.leg import AudioLeg
from bridge.settings import Secrets, load_settings
from bridge.settings.outbound import TrunkSettings
from bridge.simulator.procs import free_rtp_range
from bridge.simulator.sipp import have_sipp
from bridge.sip.refer import refer_to, sipfrag_status, uri_host
from bridge.sip.server import SipServer
from bridge.sip.uac import TrunkCaller
from bridge.supervisor import CallSupervisor
from tests.trunk import scenarios
from tests.trunk.test_trunk_uac import _wait_exit, trunk

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="needs SIPp")]


@contextlib.asynccontextmanager
async def stack_with(agent: object) -> AsyncIterator[tuple[SipServer, DaemonCallApp]]:
    lo, hi = free_rtp_range(20)
    settings = load_settings(None, overrides={
        "sip": {"listen_host": "127.0.0.1", "listen_port": 0, "transports": ["udp"], "t1_ms": 100},
        "media": {"rtp_port_min": lo, "rtp_port_max": hi},
    })
    calls = CallSupervisor(agent, Admission(settings.sip.max_calls))  # type: ignore[arg-type]
    app = DaemonCallApp(settings, calls, bind_host="127.0.0.1")
    server = SipServer(settings.sip, app, Secrets())
    await server.start()
    try:
        yield server, app
    finally:
        await calls.end_all("test-end")
        await calls.wait_idle(3)
        await server.stop()


async def test_refer_names_the_trunk_domain_waits_for_notify_and_lets_the_trunk_hang_up(
    tmp_path: Path,
) -> None:
    outcomes: list[bool] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        await asyncio.sleep(0.2)
        outcomes.append(await leg.transfer("+919812345678"))

    with trunk(tmp_path, scenarios.REFER_ACCEPTED) as (port, proc):
        await asyncio.sleep(0.3)  # SIPp binds its socket
        async with stack_with(agent) as (server, app):
            caller = TrunkCaller(server, TrunkSettings(host=f"127.0.0.1:{port}"), None, ["PCMU", "PCMA"])
            result = await caller.call("+919876543210", "+911140001234")
            assert result.outcome == "answered", result
            assert await app.supervisor.wait_idle(10)  # ended by the trunk's BYE
        out = proc.communicate(timeout=10)
        assert await _wait_exit(proc) == 0, out
    assert outcomes == [True]


def test_refer_helpers() -> None:
    assert uri_host("<sip:+9198@abc.zt.plivo.com:5060>;tag=x") == "abc.zt.plivo.com"
    assert refer_to("+91 98123 45678", "abc.zt.plivo.com") == "sip:+919812345678@abc.zt.plivo.com"
    assert refer_to("sip:desk@pbx.example", "abc.zt.plivo.com") == "sip:desk@pbx.example"
    with pytest.raises(ValueError):
        refer_to("+919812345678", "")
    assert sipfrag_status(b"SIP/2.0 200 OK\r\n") == 200 and sipfrag_status("junk") is None


class _Rest:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def transfer(self, call_uuid: str, target: str) -> bool:
        self.calls.append((call_uuid, target))
        return True


async def test_plivo_xml_app_calls_transfer_through_rest_with_their_call_uuid() -> None:
    class _NoRefer:
        info = CallInfo(call_id="c1", from_uri="", to_uri="", source=("", 0),
                        plivo_headers={"Calluuid": "3b5a-uuid"})
        transferred = False

        async def refer(self, target: str) -> bool:
            raise AssertionError("REFER is not documented for <Dial><User> calls")

    rest = _Rest()
    call = _NoRefer()
    assert await transfer_for(call, rest)("+919812345678")  # type: ignore[arg-type]
    assert rest.calls == [("3b5a-uuid", "+919812345678")] and call.transferred
    assert not await transfer_for(_NoRefer(), None)("+919812345678")  # type: ignore[arg-type]
