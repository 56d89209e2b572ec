"""The inbound SIP path through the simulator: answer webhook -> <Dial><User> -> SIPp places
the call (with the X-PH-* call facts) to the real daemon -> answered, BYE -> dial-action
callback -> hangup callback.

The daemon trusts 127.0.0.1 alone and the simulator calls from 127.0.0.2 (its default, as a
Plivo edge is an address the bridge does not trust unless told), so the call goes through only
when the XML server's <User sipAuthUsername/sipAuthPassword> answers the daemon's challenge."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bridge.simulator.plivo.simulator import CallSpec, SimulatedCall, simulate_call
from bridge.simulator.procs import run_daemon
from bridge.simulator.sipp import have_sipp
from devkit.xml_proc import run_xml_server
from tests.sipp.support import metric
from tests.stream.support import tone

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="sipp (sip-tester) not installed")]

AUTH_TOKEN = "ZmFrZS1wbGl2by1hdXRoLXRva2Vu"
SIP_USER, SIP_PASSWORD = "plivo-edge", "horse battery staple"
# The daemon: 127.0.0.1 trusted (the test's own SIPp runs), everything else challenged.
DAEMON_CONFIG = f'[sip.trust]\ntrusted_cidrs = ["127.0.0.1/32"]\ninbound_user = "{SIP_USER}"\n'
DAEMON_ENV = {"VOICE_BRIDGE_SIP_INBOUND_PASSWORD": SIP_PASSWORD}


def _xml_config(tmp_path: Path, sip_port: int) -> Path:
    xml_cfg = tmp_path / "xml.toml"
    xml_cfg.write_text(f'[plivo]\nmode = "sip"\nsip_uri = "sip:agent@127.0.0.1:{sip_port}"\n'
                       f'trusted_proxies = ["127.0.0.1/32"]\nnonce_db = "{tmp_path / "n.sqlite"}"\n'
                       f'[sip.trust]\ninbound_user = "{SIP_USER}"\n')
    return xml_cfg


def _call(xml_cfg: Path, xml_password: str | None, lines: list[str],
          trusted_source: bool = False) -> SimulatedCall:
    env = {"PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    if xml_password is not None:
        env["VOICE_BRIDGE_SIP_INBOUND_PASSWORD"] = xml_password
    with run_xml_server(xml_cfg, env=env) as xml:
        spec = CallSpec(answer_url=f"{xml.base}/answer", caller_pcm=tone(500), auth_token=AUTH_TOKEN,
                        tail_s=0.5, call_uuid="c0ffee00-aaaa-bbbb-cccc-dddddddddddd",
                        trusted_source=trusted_source)
        return asyncio.run(simulate_call(spec, printer=lines.append))


def test_inbound_sip_call_through_xml_server_and_daemon(tmp_path: Path) -> None:
    lines: list[str] = []
    with run_daemon(tmp_path, agent="echo", config=DAEMON_CONFIG, env=DAEMON_ENV) as daemon:
        call = _call(_xml_config(tmp_path, daemon.sip_port), SIP_PASSWORD, lines)
        calls = metric(daemon.http, "voice_bridge_calls_total", 'outcome="bye",transport="sip"')
    log = "\n".join(lines)
    assert call.ok and call.sip_answered, log + "\n" + daemon.logs()
    # From the untrusted address: challenged, answered with the <User>'s credentials.
    assert call.sip_challenged and call.sip_refused is None, log
    assert calls == 1
    assert SIP_PASSWORD not in log and 'sipAuthPassword="***"' in log  # the printed XML is masked
    assert [status for _, status in call.followups] == [200, 200], log  # dial action, hangup
    assert "dial action completed" in log and "<Hangup" in log
    # The daemon's lines of the call carry Plivo's CallUUID (from X-PH-CallUUID), the field the
    # XML server logs, so the two processes' lines of one call join.
    records = [json.loads(x) for x in daemon.logs().splitlines() if x.startswith("{")]
    of_call = [r for r in records if r.get("msg") in ("call setup", "call ended")]
    assert len(of_call) >= 2, daemon.logs()
    assert {r.get("call_uuid") for r in of_call} == {call.call_uuid}, of_call


@pytest.mark.parametrize(("xml_password", "daemon_config", "status"), [
    ("not the password", DAEMON_CONFIG, 401),  # the answer to the challenge is refused: 401 again
    (None, DAEMON_CONFIG, 401),  # Plivo has nothing to answer the 401 with: the call ends there
    (SIP_PASSWORD, '[sip.trust]\ntrusted_cidrs = ["127.0.0.1/32"]\n', 403),  # no inbound auth at all
], ids=["wrong", "missing", "no-auth-configured"])
def test_sip_leg_without_the_right_credentials_is_refused(tmp_path: Path, xml_password: str | None,
                                                          daemon_config: str, status: int) -> None:
    lines: list[str] = []
    with run_daemon(tmp_path, agent="echo", config=daemon_config, env=DAEMON_ENV) as daemon:
        call = _call(_xml_config(tmp_path, daemon.sip_port), xml_password, lines)
        calls = metric(daemon.http, "voice_bridge_calls_total", 'outcome="bye",transport="sip"')
    log = "\n".join(lines)
    assert call.sip_refused == status and not call.sip_answered, log
    assert call.sip_challenged == (status == 401 and xml_password is not None), log
    assert not call.ok and f"SIP call refused with {status}" in call.error
    assert "dial action failed" in log and calls == 0
    if xml_password is not None:
        assert xml_password not in log


def test_trusted_source_skips_the_challenge(tmp_path: Path) -> None:
    lines: list[str] = []
    with run_daemon(tmp_path, agent="echo", config=DAEMON_CONFIG, env=DAEMON_ENV) as daemon:
        call = _call(_xml_config(tmp_path, daemon.sip_port), None, lines, trusted_source=True)
    log = "\n".join(lines)
    assert call.ok and call.sip_answered and not call.sip_challenged, log + "\n" + daemon.logs()
    assert "from 127.0.0.1 " in log


def test_dial_scenario_carries_call_facts_as_x_ph_headers(tmp_path: Path) -> None:
    from bridge.simulator.plivo.sip_call import parse_sip_uri, render_scenario

    assert parse_sip_uri("sip:agent@10.0.0.5:5070") == ("agent", "10.0.0.5", 5070)
    assert parse_sip_uri("sip:user1234@phone.plivo.com") == ("user1234", "phone.plivo.com", 5060)
    text = render_scenario(tmp_path, bytes(3200), 500, "sales", "+14155550100",
                           {"Calluuid": "ab%2D1", "From": "%2B31"}).read_text()
    assert "X-PH-Calluuid: ab%2D1" in text and "X-PH-From: %2B31" in text
    assert "INVITE sip:sales@" in text and "sip:+14155550100@" in text


def test_dial_credentials_go_to_an_injection_file_and_bad_ones_are_refused(tmp_path: Path) -> None:
    from bridge.simulator.plivo.sip_call import SipAuth, render_scenario

    auth = SipAuth("edge", "two words")
    text = render_scenario(tmp_path, bytes(3200), 500, "agent", "", {}, auth).read_text()
    assert "two words" not in text and "[field0]" in text
    assert (tmp_path / "credentials.csv").read_text() == (
        'SEQUENTIAL\n[authentication username="edge" password="two words"]\n')
    assert "two words" not in repr(auth)
    for bad in ('a"b', "a;b", "a]b", "a\nb", ""):
        with pytest.raises(ValueError, match="SIPp cannot send it"):
            render_scenario(tmp_path, bytes(3200), 500, "agent", "", {}, SipAuth("edge", bad))
