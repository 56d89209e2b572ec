"""A campaign on the sip-trunk path: `voice-bridge campaign run --via sip-trunk` asks the real
daemon's POST /calls, which dials SIPp acting as the trunk. The trunk's 486 Busy drives the
retry policy; rows an interrupted run left in 'sending' are settled by asking the daemon
(GET /calls/{call_id}): a call it made is not made again, one it never saw is dialed; a
re-run dials nobody. A daemon killed mid-call leaves a 'placed' row that, once overdue
(outcome_timeout_s), becomes 'unknown' and is never redialed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.simulator.procs import run_daemon
from bridge.simulator.sipp import free_udp_port, have_sipp
from tests.trunk import scenarios

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="needs SIPp")]

TOKEN = "campaign-token-123"
PEOPLE = ["+919876543210", "+919812345678"]
COMPLIANCE = """
[compliance]
window_start = "00:00"
window_end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
registered_caller_ids = ["+911140001234"]
consent_required = []  # not what this test is about (tests/outbound/test_compliance.py)
caller_id_series = {{}}
[outbound]
via = "sip-trunk"
api_calls_per_number = 10  # this test dials the same people up to 4 times
max_attempts = 2
retry_delay_s = 0
calls_per_second = 20
concurrency = 1
[outbound.trunk]
host = "127.0.0.1:{port}"
"""


def test_trunk_busy_is_retried_then_final_and_a_rerun_dials_nobody(tmp_path: Path) -> None:
    port = free_udp_port()
    scenario = tmp_path / "busy.xml"
    scenario.write_text(scenarios.BUSY)
    messages = tmp_path / "msgs.log"
    trunk = subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "6", "-nostdin",
         "-timeout", "60s", "-timeout_error", "-trace_msg", "-message_file", str(messages)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    listing = tmp_path / "june.csv"
    listing.write_text("number\n" + "\n".join(PEOPLE) + "\n")
    try:
        env = {"VOICE_BRIDGE_API_TOKEN": TOKEN}
        with run_daemon(tmp_path, config=COMPLIANCE.format(port=port), env=env) as daemon:
            cli_config = tmp_path / "cli.toml"
            cli_config.write_text(COMPLIANCE.format(port=port)
                                  + f'[daemon]\ndata_dir = "{tmp_path / "cli-data"}"\n'
                                  + f"[http]\nlisten_port = {daemon.http_port}\n")
            cli_env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_BRIDGE_")}
            cli_env["VOICE_BRIDGE_API_TOKEN"] = TOKEN
            argv = [sys.executable, "-m", "bridge.cli", "campaign", "run", str(listing), "--config",
                    str(cli_config)]
            first = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=120,
                                   check=False)
            # As if a run had died in 'sending': Alice's last request (the daemon knows its call
            # id) and one for Bob that never reached the daemon.
            db = sqlite3.connect(tmp_path / "cli-data" / "outbound" / "outbound.sqlite")
            with db:
                db.execute("UPDATE campaign_person SET state='sending' WHERE number=?", (int(PEOPLE[0][1:]),))
                db.execute("UPDATE campaign_person SET state='sending', attempts=1, hint='neverseen123'"
                           " WHERE number=?", (int(PEOPLE[1][1:]),))
            db.close()
            recovered = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=120,
                                       check=False)
            second = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=60,
                                    check=False)
            logs = daemon.logs()
        assert trunk.wait(20) == 0, (recovered.stdout, recovered.stderr, trunk.communicate())
    finally:
        if trunk.poll() is None:
            trunk.kill()
            trunk.wait(5)
    out = first.stdout + first.stderr
    assert "dialed 4 this run; busy=2" in out, out
    again = recovered.stdout + recovered.stderr
    assert "1 row(s) an interrupted run placed were found at the provider" in again, again
    assert "1 row(s) an interrupted run had not placed were queued again" in again, again
    assert "dialed 2 this run; busy=2" in again, again  # Bob only: requeued, busy, retried
    assert "dialed 0 this run; busy=2" in second.stdout, second.stdout + second.stderr
    assert messages.read_text().count("INVITE sip:") >= 6
    for text in (out, again, second.stdout + second.stderr, logs):
        assert "9876543210" not in text and "9812345678" not in text
    results = (tmp_path / "june.results.csv").read_text()
    assert results.count(",busy,busy,2,") == 2, results


RINGING_LONG = COMPLIANCE + """ring_timeout_s = 240.0
"""


def _wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_daemon_killed_mid_call_leaves_an_overdue_placed_row_that_becomes_unknown(tmp_path: Path) -> None:
    """CLI killed while the daemon rings the trunk -> the next run finds the call in progress
    (placed); the daemon is then killed mid-call and restarted; once the row is overdue
    (outcome_timeout_s) the daemon says it allowed the call but has no outcome and is not
    placing it: the row becomes `unknown` and the person is not dialed again."""
    port = free_udp_port()
    scenario = tmp_path / "ring.xml"
    scenario.write_text(scenarios.NO_ANSWER)
    messages = tmp_path / "msgs.log"
    trunk = subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-nostdin",
         "-trace_msg", "-message_file", str(messages)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    listing = tmp_path / "june.csv"
    listing.write_text(f"number\n{PEOPLE[0]}\n")
    config = RINGING_LONG.format(port=port).replace(
        "[outbound]\n", "[outbound]\noutcome_timeout_s = 60.0\n")
    env = {"VOICE_BRIDGE_API_TOKEN": TOKEN}
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_BRIDGE_")}
    cli_env["VOICE_BRIDGE_API_TOKEN"] = TOKEN
    cli_config = tmp_path / "cli.toml"
    argv = [sys.executable, "-m", "bridge.cli", "campaign", "run", str(listing), "--config", str(cli_config)]
    db_path = tmp_path / "cli-data" / "outbound" / "outbound.sqlite"

    def cli_for(http_port: int) -> None:
        cli_config.write_text(config + f'[daemon]\ndata_dir = "{tmp_path / "cli-data"}"\n'
                              + f"[http]\nlisten_port = {http_port}\n")

    def invites() -> int:
        return messages.read_text().count("INVITE sip:") if messages.exists() else 0

    try:
        with run_daemon(tmp_path, config=config, env=env) as first_daemon:
            cli_for(first_daemon.http_port)
            killed = subprocess.Popen(argv, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_for(lambda: invites() >= 1, "the trunk to get the INVITE")
            finally:
                killed.kill()
                killed.wait(10)
            recovered = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=60,
                                       check=False)
            first_daemon.proc.kill()  # the daemon dies mid-call (the trunk is still ringing)
            first_daemon.proc.wait(10)
        db = sqlite3.connect(db_path)
        with db:  # an hour has passed since the request left (outcome_timeout_s is 60 s)
            db.execute("UPDATE campaign_person SET sending_at=sending_at-3600")
        db.close()
        with run_daemon(tmp_path, config=config, env=env) as second_daemon:
            cli_for(second_daemon.http_port)
            overdue = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=60,
                                     check=False)
            again = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=60,
                                   check=False)
    finally:
        trunk.kill()
        trunk.wait(5)
    first = recovered.stdout + recovered.stderr
    assert "1 row(s) an interrupted run placed were found at the provider" in first, first
    assert "dialed 0 this run; placed=1" in first, first
    late = overdue.stdout + overdue.stderr
    assert "1 unknown to the provider" in late and "dialed 0 this run; unknown=1" in late, late
    assert "dialed 0 this run; unknown=1" in again.stdout, again.stdout + again.stderr
    assert invites() == 1  # never dialed twice
    results = (tmp_path / "june.results.csv").read_text()
    assert ",unknown,unknown,1," in results and "restarted mid-call" in results, results
    for text in (first, late):
        assert "9876543210" not in text
