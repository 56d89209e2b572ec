"""No raw digits of a phone number in any log line of either process: the shared setup
(bridge.logs) masks messages, fields and tracebacks; the XML server's access logs (werkzeug
under `voice-bridge xml-server`, gunicorn as the systemd unit runs it) are masked, including
URL-encoded numbers (%2B91...); dates and file names stay as they are."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.logs import setup_logging
from bridge.privacy import mask_phone_numbers
from bridge.simulator.plivo.webhook import post_webhook_sync
from bridge.simulator.procs import REPO, free_port
from devkit.xml_proc import run_xml_server
from tests.xml_server.support import TOKEN
from tests.xml_server.test_gunicorn_unit import _exec_start

NUMBER = "+919812345678"
FORMS = [NUMBER, NUMBER[1:], NUMBER[3:], "98123 45678", "%2B919812345678"]
CALL = {"CallUUID": "3b5a1a64-8e3e-11ee-b9d1-0242ac120002", "From": NUMBER, "To": "918035735100",
        "Direction": "inbound", "CallStatus": "ringing"}


def leaks(text: str) -> list[str]:
    return [f for f in FORMS if f in text]


@pytest.fixture(autouse=True)
def keep_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = {name: list(logging.getLogger(name).filters) for name in ("gunicorn.access", "werkzeug")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, filters in saved.items():
        logging.getLogger(name).filters[:] = filters


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_tracebacks_fields_and_stack_are_masked(fmt: str, capsys) -> None:
    setup_logging("INFO", fmt, log_phone_numbers=False)
    log = logging.getLogger("bridge.test")
    try:
        raise ValueError(f"cannot dial {NUMBER} (sip:{NUMBER[1:]}@trunk)")
    except ValueError:
        log.exception("dial failed for %s", NUMBER, extra={"to": NUMBER[3:]})
    log.warning("with stack", stack_info=True, extra={"url": "/answer?From=%2B919812345678"})
    err = capsys.readouterr().err
    assert "ValueError: cannot dial +91********78" in err and "Traceback" in err
    assert not leaks(err), err
    if fmt == "json":
        records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert records[0]["exc"].startswith("Traceback") and "+91********78" in records[0]["exc"]


def test_allowed_numbers_are_shown_when_configured(capsys) -> None:
    setup_logging("INFO", "json", log_phone_numbers=True)
    logging.getLogger("bridge.test").info("to %s", NUMBER)
    assert NUMBER in capsys.readouterr().err


def test_dates_and_file_names_are_not_mangled() -> None:
    for text in ("transcript 20261201-163838-abc123.jsonl written", "at 2026-12-01 16:38:38",
                 "recording 20261201T163838Z-call.wav", "window 09:00-21:00"):
        assert mask_phone_numbers(text) == text
    encoded = "From=%2B919812345678&To=%2b918035735100"
    assert mask_phone_numbers(encoded) == "From=%2B91********78&To=%2B91********00"


def test_werkzeug_access_log_of_the_xml_server_is_masked(tmp_path: Path) -> None:
    config = tmp_path / "xml.toml"
    config.write_text('[plivo]\nmode = "sip"\nsip_uri = "sip:agent@10.1.2.3:5060"\n'
                      'trusted_proxies = ["127.0.0.1/32"]\n[logging]\nformat = "json"\n')
    with run_xml_server(config, env={"PLIVO_AUTH_TOKEN": TOKEN}) as xml:
        reply = post_webhook_sync(f"{xml.base}/answer", CALL, TOKEN, method="GET")  # From=%2B91... in the URL
        assert reply.status == 200
        assert post_webhook_sync(f"{xml.base}/transfer?to=%2B919812345678", CALL, None).status == 403
        for _ in range(100):  # the access lines are written after the responses (bounded: 5 s)
            lines = list(xml.log_lines)
            # the access line itself: the 403's own log line names the path without the query
            if any("GET /answer" in ln for ln in lines) and any("/transfer?to=" in ln for ln in lines):
                break
            time.sleep(0.05)
        logs = xml.logs()
    assert "GET /answer?" in logs and "From=%2B91********78" in logs
    assert "/transfer?to=%2B91********78" in logs
    assert not leaks(logs), logs


def test_gunicorn_access_log_as_the_unit_runs_it_is_masked(tmp_path: Path) -> None:
    port = free_port()
    argv = _exec_start()
    argv[0] = str(Path(sys.executable).parent / "gunicorn")
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    config = tmp_path / "vb.toml"
    config.write_text('[plivo]\nmode = "sip"\nsip_uri = "sip:agent@10.1.2.3:5060"\n'
                      'trusted_proxies = ["127.0.0.1/32"]\n')
    env = {**os.environ, "VOICE_BRIDGE_CONFIG": str(config), "PLIVO_AUTH_TOKEN": TOKEN}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        reply = None
        for _ in range(100):  # until gunicorn's workers accept (bounded: 10 s)
            try:
                url = f"http://127.0.0.1:{port}/answer"
                reply = post_webhook_sync(url, CALL, TOKEN, method="GET", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        assert reply is not None and reply.status == 200
        post_webhook_sync(f"http://127.0.0.1:{port}/transfer?to=%2B919812345678", CALL, None)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
    assert '"GET /answer?' in out and "From=%2B91********78" in out, out
    assert not leaks(out), out
