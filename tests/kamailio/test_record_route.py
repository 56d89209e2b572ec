"""The daemon behind a real record-routing proxy (Kamailio 5.6): SIPp calls through it over
UDP and TCP (UDP -> TCP makes Kamailio double record-route), hung up by the caller or by the
agent; every ACK and BYE must travel through the proxy, which refuses in-dialog requests that
bypass it. Then the proxy is restarted mid-call (its TCP connection to the daemon is gone)
and the daemon's BYE still reaches the caller through the new proxy process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bridge.simulator.procs import free_port, run_daemon
from bridge.simulator.sipp import have_sipp, run_sipp
from devkit.kamailio import have_kamailio
from tests.kamailio.support import kamailio_proxy
from tests.sipp.support import health, metric, sipp_background, wait_for
from tests.support.audio import chirp_pcm
from tests.support.sipp_steps import RECV_BYE_SEND_200

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not have_sipp(), reason="sipp not installed"),
    pytest.mark.skipif(not have_kamailio(), reason="kamailio not installed"),
]

HERE = Path(__file__).parent
CALLER_HANGS_UP = """
  <pause milliseconds="1000"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:agent@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
"""
AGENT_HANGS_UP = RECV_BYE_SEND_200
CALLS = "voice_bridge_calls_total"


def _scenario(tmp: Path, steps: str) -> Path:
    path = tmp / ("uac_routed_caller.xml" if "BYE [next_url]" in steps else "uac_routed_agent.xml")
    path.write_text((HERE / "uac_routed.xml").read_text().replace("HANGUP_STEPS", steps))
    return path


def _prompt_env(tmp: Path) -> dict[str, str]:
    import wave

    prompt = tmp / "prompt.wav"
    with wave.open(str(prompt), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(chirp_pcm(1.0))
    return {"VOICE_BRIDGE_DAEMON__PROMPT_FILE": str(prompt), "VOICE_BRIDGE_DAEMON__PROMPT_LISTEN_S": "0.5"}


@pytest.mark.parametrize(
    ("caller_transport", "daemon_transport"),
    [("u1", "udp"), ("u1", "tcp"), ("t1", "tcp")],
    ids=["udp-udp", "udp-tcp-double-rr", "tcp-tcp"],
)
def test_calls_through_a_record_routing_proxy_hung_up_from_either_side(
    tmp_path: Path, caller_transport: str, daemon_transport: str
) -> None:
    with run_daemon(tmp_path, agent="prompt", env=_prompt_env(tmp_path)) as daemon, \
            kamailio_proxy(tmp_path / "kamailio", daemon.sip_port, daemon_transport) as proxy:
        target = f"127.0.0.1:{proxy.port}"
        traces = [tmp_path / "sipp_messages_caller.log", tmp_path / "sipp_messages_agent.log"]
        for steps, trace in zip((CALLER_HANGS_UP, AGENT_HANGS_UP), traces, strict=True):
            result = run_sipp(_scenario(tmp_path, steps), target, "-t", caller_transport, "-trace_msg",
                              "-message_file", str(trace), cwd=tmp_path, timeout=20,
                              local_port=free_port())  # free for TCP too (SIPp binds it for t1)
            assert result.returncode == 0, (result.stdout[-2000:] + result.errors + "\n--- kamailio:\n"
                                            + proxy.logs()[-3000:] + "\n--- daemon:\n"
                                            + daemon.logs()[-3000:])
        assert wait_for(lambda: health(daemon.http)["active_calls"] == 0, 5)
        assert metric(daemon.http, CALLS, 'outcome="bye",transport="sip"') == 1
        assert metric(daemon.http, CALLS, 'outcome="agent-finished",transport="sip"') == 1
        assert metric(daemon.http, CALLS, 'outcome="ack-timeout",transport="sip"') == 0
        logs = proxy.logs()
        assert "without a Route to us" not in logs  # nothing bypassed the proxy
        # Both ACKs and the caller's BYE came through the proxy, as did the daemon's BYE.
        # (At least: a slow answer may draw a retransmission.)
        assert logs.count("request ACK from") >= 2 and logs.count("request BYE from") >= 2
        # The 200s the caller got carry the proxy's Record-Route: two values (r2=on) where the
        # transport changes at the proxy, one otherwise.
        oks = [m for t in traces for m in t.read_text().split("\n\n----")
               if "SIP/2.0 200 OK" in m and "1 INVITE" in m]
        double = daemon_transport == "tcp" and caller_transport == "u1"
        assert len(oks) == 2 and all(m.count("r2=on") == (2 if double else 0) for m in oks), oks
        assert all(f"127.0.0.1:{proxy.port}" in m.split("Record-Route", 1)[1] for m in oks)


def test_proxy_restarted_mid_call_the_daemons_bye_still_arrives(tmp_path: Path) -> None:
    env = {"VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "2"}
    with run_daemon(tmp_path, agent="echo", env=env) as daemon, \
            kamailio_proxy(tmp_path / "kamailio", daemon.sip_port, "tcp") as proxy:
        caller = sipp_background(_scenario(tmp_path, AGENT_HANGS_UP), tmp_path,
                                 target=f"127.0.0.1:{proxy.port}", timeout_s=40)
        try:
            assert wait_for(lambda: health(daemon.http)["active_calls"] == 1, 15), proxy.logs()[-2000:]
            proxy.stop()  # every connection of the proxy closes, the daemon's TCP one included
            proxy.start()  # same port, a new process: no connection to the daemon
            daemon.proc.send_signal(signal.SIGTERM)  # drain timeout -> the daemon's BYE
            out, _ = caller.communicate(timeout=40)
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.wait(5)
        assert caller.returncode == 0, out[-2000:] + "\n--- kamailio:\n" + proxy.logs()[-3000:] \
            + "\n--- daemon:\n" + daemon.logs()[-3000:]
        assert daemon.proc.wait(20) == 0
    assert "opened a SIP TCP connection" in daemon.logs()
    assert "request BYE from" in proxy.logs()
