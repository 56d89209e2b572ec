"""systemd/voice-bridge-xml.service: verified by systemd-analyze (tests/daemon checks every unit)
and its ExecStart really serves the app: gunicorn started with the unit's own arguments answers
a signed webhook over HTTP, rejects an unsigned one, and refuses a replay in either worker."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from bridge.simulator.plivo.signing import sign_v3
from bridge.simulator.plivo.webhook import post_webhook_sync
from bridge.simulator.procs import REPO, free_port
from tests.xml_server.support import CALL, TOKEN

UNIT = REPO / "systemd" / "voice-bridge-xml.service"


def _post(url: str, params: dict[str, str], headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=urlencode(params).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_unit_is_hardened_and_uses_gunicorn() -> None:
    text = UNIT.read_text()
    for directive in ("Type=notify", "EnvironmentFile=", "User=voice-bridge", "NoNewPrivileges=yes",
                      "ProtectSystem=strict", "Restart=on-failure", "CapabilityBoundingSet="):
        assert directive in text
    argv = _exec_start()
    assert argv[0] == "/opt/voice-bridge/.venv/bin/gunicorn" and argv[-1] == "xml_server.wsgi:app"


def test_exec_start_serves_signed_webhooks(tmp_path: Path) -> None:
    port = free_port()
    argv = _exec_start()
    argv[0] = str(Path(sys.executable).parent / "gunicorn")
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    config = tmp_path / "vb.toml"
    config.write_text('[plivo]\nmode = "sip"\nsip_uri = "sip:agent@10.1.2.3:5060"\n'
                      'trusted_proxies = ["127.0.0.1/32"]\n'
                      f'nonce_db = "{tmp_path / "nonces.sqlite"}"\n')
    env = {**os.environ, "VOICE_BRIDGE_CONFIG": str(config), "PLIVO_AUTH_TOKEN": TOKEN}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}/answer"
        reply = None
        for _ in range(100):  # until gunicorn's workers accept (bounded: 10 s)
            try:
                reply = post_webhook_sync(url, CALL, TOKEN, timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        assert reply is not None, proc.stdout.read() if proc.stdout else ""
        assert reply.status == 200 and "<User>sip:agent@10.1.2.3:5060</User>" in reply.body
        assert post_webhook_sync(url, CALL, None).status == 403
        assert post_webhook_sync(url, CALL, "wrong-token").status == 403
        # One signed request replayed: the unit runs 2 workers, and the nonce memory they share
        # refuses every copy, whichever worker takes it.
        headers = {**sign_v3(TOKEN, "POST", url, CALL), "Content-Type": "application/x-www-form-urlencoded"}
        statuses = [_post(url, CALL, headers) for _ in range(12)]
        assert statuses == [200] + [403] * 11
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
