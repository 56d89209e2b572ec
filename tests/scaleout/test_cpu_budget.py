"""The benches' fixed CPU budget per daemon (bench/cpu_budget.py, --daemon-cpu-quota): the cfs
values it writes, the groups it makes and removes, and how the echo benches turn runs into the
capacity of 1 and 2 daemons. The benches themselves are not run here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.cpu_budget import CGROUP_CPU, Budget, CpuGroup, budget, from_args, throttled
from bench.kamailio_scaleout import capacity, echo_limits, parser, plan, rtp_bound_ms
from bench.sip_conversation_capacity import parser as conversation_parser
from bench.stream_scaleout import echo_figures, stream_limits
from bench.stream_scaleout import parser as stream_parser


def test_a_budget_is_its_share_of_a_short_period() -> None:
    b = budget(0.3)
    assert (b.period_us, b.quota_us, b.shares) == (10_000, 3_000, 10240)
    assert budget(0.25, period_ms=20, shares=2048, cpus=2) == Budget(0.25, 20_000, 5_000, 2048)


@pytest.mark.parametrize(("cores", "period_ms", "reason"), [
    (0, 10, "above 0"), (-0.5, 10, "above 0"), (3, 10, "more than this machine's 2"),
    (0.3, 0.5, "1-1000 ms"), (0.05, 10, "shortest quota"),
])
def test_an_unusable_budget_is_refused_with_the_reason(cores: float, period_ms: float, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        budget(cores, period_ms, cpus=2)


@pytest.mark.parametrize("make", [parser, conversation_parser, stream_parser])
def test_both_benches_take_the_quota_option(make: object) -> None:
    ap = make()  # type: ignore[operator]
    assert from_args(ap.parse_args([])) is None
    args = ap.parse_args(["--daemon-cpu-quota", "0.3", "--cfs-period-ms", "5"])
    assert from_args(args) == Budget(0.3, 5_000, 1_500, 10240)
    with pytest.raises(SystemExit, match="--daemon-cpu-quota: a CPU budget must be above 0"):
        from_args(ap.parse_args(["--daemon-cpu-quota", "0"]))


@pytest.mark.parametrize("make", [parser, conversation_parser, stream_parser])
def test_calls_per_daemon_pairs_the_daemon_counts_back_to_back(make: object) -> None:
    ap = make()  # type: ignore[operator]
    assert plan(ap.parse_args(["--daemons", "1", "2", "--calls", "10", "20"])) == [
        (1, 10), (1, 20), (2, 10), (2, 20)]
    assert plan(ap.parse_args(["--daemons", "1", "2", "--calls-per-daemon", "40", "45"])) == [
        (1, 40), (2, 80), (1, 45), (2, 90)]


def test_a_group_is_set_up_filled_and_removed(tmp_path: Path) -> None:
    """On a plain directory standing in for /sys/fs/cgroup/cpu: what the kernel would be told."""
    (tmp_path / "cgroup.procs").write_text("")
    with CpuGroup("vb-test", budget(0.3, cpus=2), root=tmp_path, rmdir=shutil.rmtree) as group:
        assert (group.path / "cpu.cfs_period_us").read_text() == "10000"
        assert (group.path / "cpu.cfs_quota_us").read_text() == "3000"
        assert (group.path / "cpu.shares").read_text() == "10240"
        group.add(4242)
        assert (group.path / "cgroup.procs").read_text() == "4242"
        (group.path / "cpu.stat").write_text("nr_periods 10\nnr_throttled 4\nthrottled_time 2000000\n")
        assert group.stat() == {"nr_periods": 10, "nr_throttled": 4, "throttled_time": 2_000_000}
    assert not (tmp_path / "vb-test").exists()
    assert (tmp_path / "cgroup.procs").read_text() == "4242"  # a process left in it goes back up


def test_throttling_between_two_readings() -> None:
    before = {"nr_periods": 100, "nr_throttled": 10, "throttled_time": 1_000_000_000}
    after = {"nr_periods": 300, "nr_throttled": 60, "throttled_time": 1_500_000_000}
    assert throttled(before, after) == {"periods": 200, "throttled_share": 0.25, "throttled_s": 0.5}
    assert throttled({}, {})["throttled_share"] == 0.0


def _run(daemons: int, calls: int, limit: list[str] | None) -> dict[str, object]:
    return {"daemons": daemons, "calls": calls, "limit": limit}


def test_capacity_is_the_last_count_before_a_bound_broke() -> None:
    runs = [_run(1, 30, None), _run(1, 40, None), _run(1, 50, ["rtp interval p99 > 25 ms"]),
            _run(1, 60, None),  # passing after a failure does not count: the load is not monotone
            _run(2, 60, None), _run(2, 80, None), _run(2, 100, ["failed calls"])]
    got = capacity(runs)
    assert got["1"] == {"calls": 40, "first_over": {"calls": 50, "limit": ["rtp interval p99 > 25 ms"]},
                        "times_one_daemon": 1.0}
    assert got["2"]["calls"] == 80 and got["2"]["times_one_daemon"] == 2.0
    assert capacity([_run(2, 10, ["failed calls"])]) == {
        "2": {"calls": 0, "first_over": {"calls": 10, "limit": ["failed calls"]}}}


def test_the_rtp_bound_leaves_room_for_the_caps_own_pause() -> None:
    assert rtp_bound_ms(None, None) == 25.0
    assert rtp_bound_ms(None, budget(0.3, cpus=2)) == 32.0  # 25 + (10 - 3) ms
    assert rtp_bound_ms(None, budget(0.3, period_ms=5, cpus=2)) == 28.5
    assert rtp_bound_ms(40.0, budget(0.3, cpus=2)) == 40.0


def test_echo_bounds() -> None:
    assert echo_limits(0, 21.0, 25, [4.0, 6.0], [95.0, 95.0], budget(0.3, cpus=2)) is None  # at budget: fine
    assert echo_limits(0, 21.0, 25, [4.0], [95.0], None) == ["cpu > 80 % of a core"]
    assert echo_limits(2, 30.0, 25, [None], [10.0], None) == [
        "failed calls", "rtp interval p99 > 25 ms", "loop lag p99 > 50 ms"]
    assert echo_limits(0, None, 25, [1.0], [10.0], None) == ["rtp interval p99 > 25 ms"]  # nothing captured


@pytest.mark.skipif(not (os.geteuid() == 0 and os.access(CGROUP_CPU / "cpu.cfs_quota_us", os.W_OK)),
                    reason="needs root and a writable cgroup v1 cpu controller")
def test_a_real_process_lands_in_the_group_and_the_group_goes() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        name = f"vb-test-{os.getpid()}"
        with CpuGroup(name, budget(0.3)) as group:
            group.add(proc.pid)
            assert (group.path / "cpu.cfs_quota_us").read_text().strip() == "3000"
            assert (group.path / "cpu.cfs_period_us").read_text().strip() == "10000"
            assert f"cpu:/{name}" in Path(f"/proc/{proc.pid}/cgroup").read_text().replace("cpuacct,", "")
        assert not (CGROUP_CPU / name).exists()
        assert f"cpu:/{name}" not in Path(f"/proc/{proc.pid}/cgroup").read_text()
    finally:
        proc.kill()
        proc.wait()


def _stream(heard_share: float = 1.0, echoed: int = 700, gaps: int = 0, **over: object) -> dict[str, object]:
    return {"close_code": 1000, "ended_by": "caller", "bad_messages": 0, "heard_share": heard_share,
            "echoed_ticks": echoed, "gap_ticks": gaps, **over}


def test_what_a_stream_caller_heard() -> None:
    frame = np.full(160, 800, dtype="<i2").tobytes()
    quiet = bytes(320)
    assert echo_figures(quiet * 3 + frame * 2 + quiet + frame + quiet * 2) == (3, 1)  # one gap inside
    assert echo_figures(quiet * 4) == (0, 0)


def test_stream_bounds() -> None:
    assert stream_limits([_stream(), _stream(gaps=7)], [3.0, 4.0], [30.0, 30.0], None) is None  # 0.5 %
    assert stream_limits([_stream(), {"error": "InvalidStatus"}], [3.0], [30.0], None) == ["failed streams"]
    assert stream_limits([_stream(0.9)], [3.0], [30.0], None) == ["a call heard < 95% of its tone"]
    assert stream_limits([_stream(gaps=8, echoed=700)], [3.0], [30.0], None) == ["echo gaps > 1%"]
    assert stream_limits([_stream(ended_by="bridge")], [60.0], [30.0], None) == [
        "failed streams", "loop lag p99 > 50 ms"]
    # the lean callers' own timer ran late: the run is their limit, named as such
    assert stream_limits([_stream()], [3.0], [30.0], None, callers_late_ms=25.0) == [
        "callers' timer p99 late > 20 ms"]
    assert stream_limits([_stream()], [3.0], [30.0], None, callers_late_ms=19.0) is None


def test_the_stream_bench_calls_with_the_lean_callers_unless_told() -> None:
    assert stream_parser().parse_args([]).callers == "lean"
    assert stream_parser().parse_args(["--callers", "simulator"]).callers == "simulator"
    with pytest.raises(SystemExit):
        stream_parser().parse_args(["--callers", "websockets"])
