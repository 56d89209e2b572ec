"""`kill -9` at seeded random points in 20 runs of a 40-person campaign: nobody is called twice,
nobody is skipped. Each run is a real `voice-bridge campaign run` process; the real plivo SDK
in it talks to the fake Plivo API in this process, which kills the run from inside a request
(the call is created, the answer never arrives) or a few milliseconds after answering."""

import collections
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from devkit.fake_plivo_api import FakePlivoApi

from .support import CALLER_ID, TOML_NOT_THE_GATE

pytestmark = pytest.mark.slow

PEOPLE = [f"+9198{i:08d}" for i in range(40)]
RUNS = 20


def _config(tmp_path: Path, api: FakePlivoApi) -> Path:
    path = tmp_path / "vb.toml"
    path.write_text(f"""
[daemon]
data_dir = "{tmp_path / 'data'}"
[logging]
level = "WARNING"
format = "json"
[compliance]
registered_caller_ids = ["{CALLER_ID}"]
{TOML_NOT_THE_GATE}days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
window_start = "00:00"
window_end = "24:00"
[outbound]
via = "plivo-api"
answer_url = "https://vb.example.com/plivo/answer"
plivo_api_url = "{api.base_url}"
calls_per_second = 200
concurrency = 3
""")
    return path


def test_kill_9_at_random_points_nobody_twice_nobody_skipped(tmp_path: Path) -> None:
    rng = random.Random(9)
    listing = tmp_path / "june.csv"
    listing.write_text("name,number\n" + "".join(f"p{i},{n}\n" for i, n in enumerate(PEOPLE)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_BRIDGE_")}
    current: dict[str, Any] = {"total": 0}

    def on_call(body: dict[str, Any], request_uuid: str) -> None:
        current["creates"] += 1
        current["total"] += 1
        if current["total"] % 3:  # most calls are over by the next run (call records); some still queued
            api.end_call(request_uuid, "completed", "Normal Hangup", bill_duration=30)
        if current["creates"] != current["kill_at"]:
            return
        proc: subprocess.Popen[bytes] = current["proc"]
        if current["mode"] == "in-request":
            proc.send_signal(signal.SIGKILL)  # the call exists at Plivo; the run never hears of it
        else:
            threading.Timer(current["delay"], lambda: proc.send_signal(signal.SIGKILL)).start()

    api = FakePlivoApi(on_call=on_call)
    with api:
        env.update(PLIVO_AUTH_ID=api.auth_id, PLIVO_AUTH_TOKEN=api.auth_token)
        config = _config(tmp_path, api)
        argv = [sys.executable, "-m", "bridge.cli", "campaign", "run", str(listing), "--config", str(config)]
        killed = 0
        for _ in range(RUNS):
            current.update(creates=0, kill_at=rng.randint(1, 3), mode=rng.choice(["in-request", "after"]),
                           delay=rng.uniform(0.0, 0.03))
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            current["proc"] = proc
            out, _ = proc.communicate(timeout=120)
            killed += proc.returncode == -signal.SIGKILL
            assert proc.returncode in (0, -signal.SIGKILL), out.decode(errors="replace")
        # One last run without a kill finishes whatever is left.
        current.update(creates=0, kill_at=-1)
        final = subprocess.run(argv, env=env, capture_output=True, timeout=120, check=False)
        assert final.returncode == 0, final.stdout.decode() + final.stderr.decode()
        created = collections.Counter(r.body["to"] for r in api.call_creates() if r.status == 201)
    assert killed >= RUNS // 2  # the kills did land mid-campaign
    twice = [n for n, c in created.items() if c > 1]
    assert not twice, f"{len(twice)} people called twice"
    assert sorted(created) == PEOPLE  # nobody skipped
