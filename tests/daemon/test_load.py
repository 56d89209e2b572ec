"""Load shedding and per-instance load: the LoadMonitor's decisions from given lag samples, and
the real daemon refusing new calls (INVITE and OPTIONS 503) while it sheds, with the load in
/healthz and /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.daemon.load import LoadMonitor
from bridge.simulator.procs import run_daemon
from tests.sip.corpus import SDP
from tests.sipp.support import RawSip, health, metric, metrics_text, wait_for


def test_sheds_on_sustained_lag_not_on_one_late_tick() -> None:
    mon = LoadMonitor(shed_loop_lag_ms=50)
    for _ in range(20):
        mon.record_lag(0.002)
    mon.record_lag(0.5)  # one 500 ms stall (a GC pass): the mean over the second stays low
    assert mon.lag_recent_s < 0.05 and not mon.overloaded()
    for _ in range(20):
        mon.record_lag(0.08)  # a loop that stays 80 ms behind
    assert mon.overloaded() and mon.snapshot()["shedding"] is True
    for _ in range(20):
        mon.record_lag(0.03)  # under the threshold, but not under half of it: still shedding
    assert mon.overloaded()
    for _ in range(20):
        mon.record_lag(0.01)
    assert not mon.overloaded()


def test_zero_threshold_never_sheds() -> None:
    mon = LoadMonitor(shed_loop_lag_ms=0)
    for _ in range(40):
        mon.record_lag(2.0)
    assert not mon.overloaded() and mon.snapshot()["loop_lag_ms"] == 2000.0


def test_sheds_on_cpu_before_the_loop_is_late_and_takes_calls_again_well_under_it() -> None:
    mon = LoadMonitor(shed_loop_lag_ms=100, shed_cpu_percent=85)
    for _ in range(20):
        mon.record_lag(0.002)  # the loop is on time...
    mon.record_cpu(0.80)
    assert not mon.overloaded()
    mon.record_cpu(0.90)  # ...but the process is near one core: new calls are shed now
    assert mon.overloaded() and mon.snapshot()["cpu_percent"] == 90.0
    mon.record_cpu(0.80)  # under the threshold, not 10 points under: still shedding
    assert mon.overloaded()
    mon.record_cpu(0.70)
    assert not mon.overloaded()
    for _ in range(20):
        mon.record_lag(0.2)  # the lag alone still sheds, whatever the CPU
    assert mon.overloaded()


def test_cpu_threshold_off_by_default() -> None:
    mon = LoadMonitor(shed_loop_lag_ms=100)
    mon.record_cpu(1.0)
    assert not mon.overloaded()


@pytest.mark.sipp
def test_daemon_reports_load_and_refuses_calls_while_shedding(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    with run_daemon(tmp_path / "ok") as daemon:
        assert wait_for(lambda: health(daemon.http)["load"]["cpu_percent"] >= 0, 5)  # type: ignore[index]
        body = health(daemon.http)
        load = body["load"]
        assert isinstance(load, dict) and load["shedding"] is False and load["calls"] == 0
        assert {"loop_lag_ms", "loop_lag_max_ms", "cpu_percent", "pid"} <= set(load)
        text = metrics_text(daemon.http)
        for name in ("voice_bridge_event_loop_lag_seconds_bucket", "voice_bridge_process_cpu_ratio",
                     "process_cpu_seconds_total", "process_resident_memory_bytes", "voice_bridge_shedding"):
            assert name in text, name
    # A threshold no loop can meet (1 us of mean lag): the daemon sheds from its first second.
    (tmp_path / "shed").mkdir()
    with run_daemon(tmp_path / "shed", env={"VOICE_BRIDGE_DAEMON__SHED_LOOP_LAG_MS": "0.001"}) as daemon:
        assert wait_for(lambda: health(daemon.http)["status"] == "overloaded", 10)
        with RawSip(daemon.sip_port) as raw:
            raw.send(raw.invite("shed-1", SDP))
            refused, _ = raw.final()
        assert refused.status_code == 503 and refused.get_header("retry-after")
        labels = 'reason="overloaded",transport="sip"'
        assert metric(daemon.http, "voice_bridge_calls_refused_total", labels) == 1
        assert metric(daemon.http, "voice_bridge_shedding") == 1
