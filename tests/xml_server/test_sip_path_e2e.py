"""The inbound SIP path through the simulator: answer webhook -> <Dial><User> -> SIPp places
the call (with the X-PH-* call facts) to the real daemon -> answered, BYE -> dial-action
callback -> hangup callback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bridge.devtools.plivo_sim.simulator import CallSpec, simulate_call
from bridge.devtools.plivo_sim.xml_proc import run_xml_server
from bridge.devtools.procs import run_daemon
from bridge.devtools.sipp import have_sipp
from tests.stream.support import tone

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="sipp (sip-tester) not installed")]

AUTH_TOKEN = "ZmFrZS1wbGl2by1hdXRoLXRva2Vu"


def test_inbound_sip_call_through_xml_server_and_daemon(tmp_path: Path) -> None:
    env = {"PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    lines: list[str] = []
    with run_daemon(tmp_path, agent="echo") as daemon:
        xml_cfg = tmp_path / "xml.toml"
        xml_cfg.write_text(f'[plivo]\nmode = "sip"\nsip_uri = "sip:agent@127.0.0.1:{daemon.sip_port}"\n'
                           f'trusted_proxies = ["127.0.0.1/32"]\nnonce_db = "{tmp_path / "n.sqlite"}"\n')
        with run_xml_server(xml_cfg, env=env) as xml:
            spec = CallSpec(answer_url=f"{xml.base}/answer", caller_pcm=tone(500), auth_token=AUTH_TOKEN,
                            tail_s=0.5, call_uuid="c0ffee00-aaaa-bbbb-cccc-dddddddddddd")
            call = asyncio.run(simulate_call(spec, printer=lines.append))
    log = "\n".join(lines)
    assert call.ok and call.sip_answered, log + "\n" + daemon.logs()
    assert [status for _, status in call.followups] == [200, 200], log  # dial action, hangup
    assert "dial action completed" in log and "<Hangup" in log
    # The daemon's lines of the call carry Plivo's CallUUID (from X-PH-CallUUID), the field the
    # XML server logs, so the two processes' lines of one call join.
    records = [json.loads(x) for x in daemon.logs().splitlines() if x.startswith("{")]
    of_call = [r for r in records if r.get("msg") in ("call setup", "call ended")]
    assert len(of_call) >= 2, daemon.logs()
    assert {r.get("call_uuid") for r in of_call} == {spec.call_uuid}, of_call


def test_dial_scenario_carries_call_facts_as_x_ph_headers(tmp_path: Path) -> None:
    from bridge.devtools.plivo_sim.sip_call import parse_sip_uri, render_scenario

    assert parse_sip_uri("sip:agent@10.0.0.5:5070") == ("agent", "10.0.0.5", 5070)
    assert parse_sip_uri("sip:user1234@phone.plivo.com") == ("user1234", "phone.plivo.com", 5060)
    text = render_scenario(tmp_path, bytes(3200), 500, "sales", "+14155550100",
                           {"Calluuid": "ab%2D1", "From": "%2B31"}).read_text()
    assert "X-PH-Calluuid: ab%2D1" in text and "X-PH-From: %2B31" in text
    assert "INVITE sip:sales@" in text and "sip:+14155550100@" in text
