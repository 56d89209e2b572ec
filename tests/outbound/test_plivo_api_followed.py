"""An outbound call on the plivo-api path, followed the whole way: the compliance gate, the real
plivo SDK against the fake REST API, then the simulator plays Plivo and calls the answer URL the
API was given, the XML server answers with <Stream>, and the daemon's agent talks to the callee."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.outbound.dialer_clock import SystemClock
from bridge.outbound.wiring import open_outbound
from bridge.settings import Secrets
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.simulator import CallSpec, simulate_call
from bridge.simulator.procs import free_port, run_daemon
from devkit.fake_plivo_api import FakePlivoApi
from devkit.xml_proc import run_xml_server
from tests.stream.support import best_correlation, tone

from .support import CALLER_ID, CAROL, make_settings

SECRET = "outbound-stream-secret"


def test_plivo_api_call_is_followed_through_the_simulator_to_the_agent(tmp_path: Path) -> None:
    stream_port = free_port()
    xml_cfg = tmp_path / "xml.toml"
    xml_cfg.write_text(f'[plivo]\nmode = "stream"\nstream_url = "ws://127.0.0.1:{stream_port}/stream"\n'
                       f'trusted_proxies = ["127.0.0.1/32"]\nnonce_db = "{tmp_path / "n.sqlite"}"\n')
    daemon_cfg = f'[daemon]\nstream_listen = "127.0.0.1:{stream_port}"\n'
    with FakePlivoApi() as api:
        env = {"VOICE_BRIDGE_STREAM_SECRET": SECRET, "PLIVO_AUTH_TOKEN": api.auth_token}
        with run_daemon(tmp_path, config=daemon_cfg, env=env, agent="echo") as daemon, \
                run_xml_server(xml_cfg, env=env) as xml:
            settings = make_settings(
                tmp_path / "data",
                outbound={"answer_url": f"{xml.base}/answer", "plivo_api_url": api.base_url},
                compliance={"window_start": "00:00", "window_end": "24:00",
                            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
            )
            secrets = Secrets(plivo_auth_id=api.auth_id, plivo_auth_token=api.auth_token)
            outbound = open_outbound(settings, secrets, clock=SystemClock(), agent="echo")
            try:
                attempt = asyncio.run(outbound.service.call(CAROL, CALLER_ID, "plivo-api"))
            finally:
                outbound.close()
            assert attempt.decision.allowed and attempt.placement is not None
            assert attempt.placement.status == "queued", attempt.placement
            [created] = api.call_creates()
            answer_url = created.body["answer_url"]
            assert answer_url.startswith(f"{xml.base}/answer?vb_call=")

            # Plivo connects the callee and fetches the answer URL it was given.
            lines: list[str] = []
            sent = tone(600)
            [request_uuid] = api.calls
            # As Plivo does on an outbound call: Direction outbound, the request_uuid calls.create
            # returned as ALegRequestUUID, and the machine-detection result; the echo crosses a
            # delayed network (no jitter: an echo cannot keep audio ahead of it).
            spec = CallSpec(answer_url=answer_url, from_number=CALLER_ID, to_number=CAROL,
                            caller_pcm=sent, auth_token=api.auth_token, tail_s=1.0, direction="outbound",
                            request_uuid=request_uuid,
                            machine_detection="human", network=NetworkProfile(jitter_ms=0))
            call = asyncio.run(simulate_call(spec, printer=lines.append))
    assert call.ok, "\n".join(lines) + xml.logs()
    assert call.stream is not None
    corr, _ = best_correlation(sent, call.stream.heard)
    assert corr > 0.95, corr  # the echo agent answered the callee
    assert "7012345678" not in daemon.logs()
