"""POST /calls on the real daemon, dialing through SIPp acting as the SIP trunk."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bridge.simulator.procs import run_daemon
from bridge.simulator.sipp import free_udp_port, have_sipp
from tests.trunk import scenarios

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="needs SIPp")]

TOKEN = "test-token-123"
CONFIG = """
[compliance]
window_start = "00:00"
window_end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
registered_caller_ids = ["+911140001234"]
consent_required = []  # not what these tests are about (tests/outbound/test_compliance.py)
caller_id_series = {{}}
[outbound]
via = "sip-trunk"
[outbound.trunk]
host = "127.0.0.1:{port}"
"""


def _post(base: str, body: dict[str, Any], token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"{base}/calls", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_calls_api_dials_the_trunk_and_refusals_send_nothing(tmp_path: Path) -> None:
    port = free_udp_port()
    scenario = tmp_path / "busy.xml"
    scenario.write_text(scenarios.BUSY)
    trunk = subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-nostdin",
         "-timeout", "30s", "-timeout_error", "-trace_msg", "-message_file", str(tmp_path / "msgs.log")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        env = {"VOICE_BRIDGE_API_TOKEN": TOKEN}
        with run_daemon(tmp_path, config=CONFIG.format(port=port), env=env) as daemon:
            # Refused: an unregistered caller ID. 403 names the rule; the trunk sees nothing.
            code, body = _post(daemon.http, {"to": "+919876543210", "from": "+912240001234"})
            assert code == 403 and "caller_id_unregistered" in json.dumps(body), body
            code, body = _post(daemon.http, {"to": "+919876543210"}, token="wrong")
            assert code == 401
            time.sleep(0.3)
            log = tmp_path / "msgs.log"
            assert not log.exists() or "INVITE" not in log.read_text()
            # Allowed: the daemon INVITEs the trunk, which answers 486.
            code, body = _post(daemon.http, {"to": "+919876543210"})
            assert code == 502 and body["status"] == "busy", (body, daemon.logs())
            assert "486" in body["detail"]
            assert "9876543210" not in daemon.logs()  # numbers masked in every log line
        assert trunk.wait(15) == 0, trunk.communicate()
    finally:
        if trunk.poll() is None:
            trunk.kill()
            trunk.wait(5)
