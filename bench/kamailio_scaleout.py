"""SIPp echo calls through the shipped Kamailio front to 1 or 2 daemons; prints JSON figures.

    .venv/bin/python bench/kamailio_scaleout.py --daemons 1 2 --calls 1 60 150 --seconds 15
    .venv/bin/python bench/kamailio_scaleout.py --daemon-cpu-quota 0.25 --daemons 1 --calls 20 30 40 50 60
    .venv/bin/python bench/kamailio_scaleout.py --daemon-cpu-quota 0.25 --daemons 2 --calls 40 60 80 100 120

For each (daemons, calls) pair: calls ok/failed (SIPp's statistics; one SIPp per 100 calls),
how Kamailio spread them, the interval between consecutive RTP packets each daemon sent (tcpdump
of the daemons' RTP ranges; packets the capture missed are counted apart, not taken for gaps),
and per daemon process the CPU (% of one core, over the steady part with every call up), peak
RSS, RSS per call, its event-loop lag (the worst /healthz probe seen, and p99 of its
histogram) and the share of the steady part its loop thread waited for a CPU (schedstat).
Each call plays RTP (a 440 Hz tone, 20 ms packets) that the daemon echoes. "limit" names the
bounds a run broke: failed calls, RTP interval p99 over ``--rtp-p99-ms`` (25 ms, issue 13's
echo bound; with a budget 25 ms + period - quota, the pause the cap itself can add: 32 ms at
0.3 of a 10 ms period), loop lag p99 over 50 ms, and without a budget a daemon over 80 % of a
core.

``--daemon-cpu-quota B`` gives every daemon the same fixed budget of B cores (its own cgroup:
bench/cpu_budget.py; root). On a 2-core box SIPp, Kamailio and tcpdump share the cores with
the daemons, so two daemons of a whole core each cannot be told apart from the load they
compete with; at B < 1 the load generator keeps the rest. Then "capacity" (per daemon count:
the most calls of the list with no bound broken, every smaller count passing too) answers
target 3: two daemons at B carry about twice the calls of one at B. Per daemon: CPU as a share
of its budget, and the share of cfs periods in which the cap throttled it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# devkit/ is not installed: run from the checkout (as the other benches do).
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import cpu_budget  # noqa: E402
from cpu_budget import Budget, CpuGroup  # noqa: E402
from sip_concurrency import (  # noqa: E402
    caller_media_sinks,
    media_bases,
    rtp_intervals,
    runqueue_wait_s,
    sipp_command,
    sipp_counters,
    split,
)

from bridge.simulator.procs import Daemon, capture_udp, cpu_seconds, rss_mib, run_daemon  # noqa: E402
from bridge.simulator.sipp import media_scenario  # noqa: E402
from devkit.kamailio import Front, run_front  # noqa: E402

LAG_P99_MS = 50.0
RTP_P99_MS = 25.0


def rtp_bound_ms(explicit: float | None, budget: Budget | None) -> float:
    """The RTP interval p99 bound: ``explicit``, else issue 13's 25 ms, plus with a budget the
    longest pause the cap itself puts into a tick's sends (period - quota: a tick whose work
    crosses the end of the quota waits for the next period; on a core of its own it would not)."""
    if explicit is not None:
        return explicit
    return RTP_P99_MS + ((budget.period_us - budget.quota_us) / 1000 if budget else 0.0)


def _health(daemon: Daemon) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{daemon.http}/healthz", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as err:
        return dict(json.loads(err.read()))


@contextlib.contextmanager
def _daemons(tmp: Path, n: int, calls: int, *, agent: str = "echo", config: str = "",
             env: dict[str, str] | None = None, hosts: list[str] | None = None,
             budget: Budget | None = None, groups: list[CpuGroup] | None = None) -> Iterator[list[Daemon]]:
    """``n`` daemons, each ready for every call; ``hosts``: the address of each (default
    127.0.0.1); ``budget``: each in its own cgroup with that CPU budget (appended to ``groups``),
    moved in once it is ready (its start-up is not what is measured)."""
    env = {"VOICE_BRIDGE_LOGGING__LEVEL": "WARNING", "VOICE_BRIDGE_SIP__MAX_CALLS": str(calls + 10),
           **(env or {})}
    with contextlib.ExitStack() as stack:
        out = []
        for i in range(n):
            (tmp / f"d{i}").mkdir()
            # the group is entered first so that it is left last: the daemon has exited by then
            name = f"vb-scaleout-{os.getpid()}-d{i}"
            group = stack.enter_context(CpuGroup(name, budget)) if budget else None
            daemon = stack.enter_context(run_daemon(tmp / f"d{i}", agent=agent, env=env, config=config,
                                                    rtp_ports=2 * calls + 40, ready_timeout=60,
                                                    host=hosts[i] if hosts else "127.0.0.1"))
            if group is not None:
                group.add(daemon.proc.pid)
                if groups is not None:
                    groups.append(group)
            out.append(daemon)
        yield out


def addresses(daemons: list[Daemon]) -> list[tuple[str, int]]:
    """Each daemon's SIP address, for the dispatcher list."""
    return [(d.host, d.sip_port) for d in daemons]


def wait_all_active(front: Front, limit_s: float = 10.0) -> None:
    """Until the dispatcher's probes found every daemon up (flags 'A...')."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and not all(f.startswith("A") for f in front.destinations().values()):
        time.sleep(0.1)


class Sampler:
    """Every 0.5 s in a thread: each daemon's CPU seconds, its loop thread's run-queue wait,
    its cgroup's cpu.stat (with a budget), peak RSS and worst /healthz loop lag."""

    def __init__(self, daemons: list[Daemon], groups: list[CpuGroup] | None = None) -> None:
        self.daemons = daemons
        self.groups = groups or []
        # (time, CPU seconds, run-queue wait seconds, cgroup cpu.stat) per daemon
        self.samples: list[tuple[float, list[float], list[float], list[dict[str, int]]]] = []
        self.rss_peak = [0.0] * len(daemons)
        self.lag_max = [0.0] * len(daemons)
        self.health_timeouts = [0] * len(daemons)
        self.idle_rss = [rss_mib(d.proc.pid) for d in daemons]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = time.monotonic()

    def __enter__(self) -> Sampler:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), [cpu_seconds(d.proc.pid) for d in self.daemons],
                                 [runqueue_wait_s(d.proc.pid) for d in self.daemons],
                                 [g.stat() for g in self.groups]))
            for i, d in enumerate(self.daemons):
                self.rss_peak[i] = max(self.rss_peak[i], rss_mib(d.proc.pid))
                try:
                    lag = float(_health(d)["load"]["loop_lag_max_ms"])
                except OSError:  # no answer in 5 s (a timeout is an OSError): the loop is that late
                    self.health_timeouts[i] += 1
                    lag = 5000.0
                self.lag_max[i] = max(self.lag_max[i], lag)
            self._stop.wait(0.5)

    def _steady(self, since_s: float, until_s: float) -> list[Any]:
        return [s for s in self.samples if self.start + since_s <= s[0] <= self.start + until_s]

    def cpu_pct(self, since_s: float, until_s: float) -> list[float]:
        """Each daemon's CPU (% of one core) between ``since_s`` and ``until_s`` after the start."""
        steady = self._steady(since_s, until_s)
        if len(steady) < 2:
            return [0.0] * len(self.daemons)
        span = steady[-1][0] - steady[0][0]
        return [round(100 * (steady[-1][1][i] - steady[0][1][i]) / span, 1) for i in range(len(self.daemons))]

    def pressure(self, since_s: float, until_s: float) -> list[dict[str, Any]]:
        """Per daemon over the same part: the share of it the loop thread waited for a CPU
        (the box took it) and, with a budget, what the cgroup's cap did (it took it)."""
        steady = self._steady(since_s, until_s)
        if len(steady) < 2:
            return [{} for _ in self.daemons]
        (t0, _, wait0, stat0), (t1, _, wait1, stat1) = steady[0], steady[-1]
        out: list[dict[str, Any]] = []
        for i in range(len(self.daemons)):
            row: dict[str, Any] = {"loop_runqueue_wait_share": round((wait1[i] - wait0[i]) / (t1 - t0), 3)}
            if i < len(stat0) and i < len(stat1):
                row["cgroup"] = cpu_budget.throttled(stat0[i], stat1[i])
            out.append(row)
        return out

    def per_process(self, cpu: list[float], calls: list[int]) -> list[dict[str, Any]]:
        return [
            {"calls": calls[i], "cpu_pct_of_core": cpu[i], "rss_peak_mib": round(self.rss_peak[i], 1),
             "rss_per_call_mib":
                 round((self.rss_peak[i] - self.idle_rss[i]) / calls[i], 3) if calls[i] else None,
             "loop_lag_max_ms": self.lag_max[i], "healthz_timeouts": self.health_timeouts[i]}
            for i in range(len(self.daemons))
        ]  # fmt: skip


def limits(failed: int, cpu: list[float], lag_max: list[float]) -> list[str] | None:
    """What ran out first: failed calls, a daemon over 80 % of a core, loop lag over 50 ms."""
    hit = []
    if failed:
        hit.append("failed calls")
    if any(c > 80 for c in cpu):
        hit.append("cpu > 80 % of a core")
    if any(lag > 50 for lag in lag_max):
        hit.append("loop lag > 50 ms")
    return hit or None


def echo_limits(failed: int, rtp_p99_ms: float | None, rtp_bound_ms: float, lag_p99_ms: list[float | None],
                cpu: list[float], budget: Budget | None) -> list[str] | None:
    """The bounds an echo run broke: failed calls, RTP interval p99, loop lag p99 and, with no
    budget (a daemon may take a whole core), a daemon over 80 % of a core."""
    hit = []
    if failed:
        hit.append("failed calls")
    if rtp_p99_ms is None or rtp_p99_ms > rtp_bound_ms:
        hit.append(f"rtp interval p99 > {rtp_bound_ms:g} ms")
    if any(lag is None or lag > LAG_P99_MS for lag in lag_p99_ms):
        hit.append(f"loop lag p99 > {LAG_P99_MS:g} ms")
    if budget is None and any(c > 80 for c in cpu):
        hit.append("cpu > 80 % of a core")
    return hit or None


def capacity(runs: list[dict[str, Any]], key: str = "limit") -> dict[str, Any]:
    """Per daemon count: the most calls with no bound broken (``run[key]`` empty), every smaller
    count of the list passing too, and the bounds the next count broke; with 1 and N daemons,
    the ratio."""
    out: dict[str, Any] = {}
    for n in sorted({r["daemons"] for r in runs}):
        best, next_limit = 0, None
        for r in sorted((r for r in runs if r["daemons"] == n), key=lambda r: r["calls"]):
            if r[key]:
                next_limit = {"calls": r["calls"], "limit": r[key]}
                break
            best = r["calls"]
        out[str(n)] = {"calls": best, "first_over": next_limit}
    if "1" in out and out["1"]["calls"]:
        for row in out.values():
            row["times_one_daemon"] = round(row["calls"] / out["1"]["calls"], 2)
    return out


def _loop_lag_p99_ms(daemon: Daemon) -> float | None:
    """p99 of the daemon's loop-lag histogram (50 ms probes since it started), interpolated."""
    text = _metrics(daemon)
    buckets: list[tuple[float, float]] = []
    pattern = r'^voice_bridge_event_loop_lag_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$'
    for le, value in re.findall(pattern, text, re.M):
        buckets.append((float("inf") if le == "+Inf" else float(le), float(value)))
    buckets.sort()
    if not buckets or not buckets[-1][1]:
        return None
    rank, lo, below = 0.99 * buckets[-1][1], 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return round(lo * 1000, 1)
            return round(1000 * (lo + (bound - lo) * (rank - below) / max(1e-9, count - below)), 1)
        lo, below = bound, count
    return round(lo * 1000, 1)


def run_once(n_daemons: int, calls: int, seconds: float, rate: float, budget: Budget | None = None,
             rtp_bound_ms: float = RTP_P99_MS, keep: Path | None = None) -> dict[str, Any]:
    procs = max(1, -(-calls // 100))  # one SIPp per 100 calls, as sip_concurrency.py
    counts = [n for n in split(calls, procs) if n]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vb-scaleout-") as tmp_s:
        tmp = Path(tmp_s)
        t = np.arange(int(8000 * seconds)) / 8000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
        scenario = media_scenario(tmp, "PCMU", pcm, pause_ms=int(seconds * 1000), per_call_ports=True,
                                  routed=True)
        groups: list[CpuGroup] = []
        with _daemons(tmp, n_daemons, calls, budget=budget, groups=groups) as daemons, \
                run_front(tmp / "k", addresses(daemons), probe_interval_s=2) as front:
            wait_all_active(front)
            ranges = [d.rtp_range for d in daemons]
            bases = _media_bases(counts, ranges)
            sinks = caller_media_sinks(counts, bases)
            workdirs = [tmp / f"sipp{i}" for i in range(len(counts))]
            port_filter = " or ".join(f"src portrange {lo}-{hi}" for lo, hi in ranges)
            # a short snaplen and a 32 MiB ring: a throttled daemon sends its packets in bursts
            with capture_udp(tmp / "out.pcap", f"udp and ({port_filter})", snaplen=512, buffer_kib=32768), \
                    Sampler(daemons, groups) as sampler:
                sipps = []
                for workdir, n, base in zip(workdirs, counts, bases, strict=True):
                    workdir.mkdir()
                    cmd = sipp_command(front.target, scenario, n, rate * n / calls, base, seconds, workdir)
                    with (workdir / "stderr.txt").open("wb") as err:  # a file: a full pipe stalls SIPp
                        sipps.append(subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL,
                                                      stderr=err))
                for p in sipps:
                    try:
                        p.wait(seconds + 120)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            for sock in sinks:
                sock.close()
            per_daemon_calls = [_calls_done(d) for d in daemons]
            lag_p99 = [_loop_lag_p99_ms(d) for d in daemons]
        gaps, packets, missed = rtp_intervals(tmp / "out.pcap")
        if keep is not None:
            import shutil

            shutil.copytree(tmp, keep / f"d{n_daemons}-c{calls}", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("kamailio-run"))
        counters: dict[str, int] = {}
        for workdir in workdirs:
            for key, value in sipp_counters(workdir).items():
                counters[key] = counters.get(key, 0) + value
    ok, failed = counters.get("SuccessfulCall", 0), counters.get("FailedCall", 0)
    ramp = calls / rate
    window = (ramp + 1, ramp + seconds - 2)  # the steady part: every call up
    cpu = sampler.cpu_pct(*window)
    per_process = sampler.per_process(cpu, per_daemon_calls)
    for row, pressure, lag in zip(per_process, sampler.pressure(*window), lag_p99, strict=True):
        row.update(pressure, loop_lag_p99_ms=lag)
        if budget is not None:
            row["cpu_pct_of_budget"] = round(row["cpu_pct_of_core"] / budget.cores, 1)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(gaps, q)), 1) if gaps.size else None

    rtp = {"p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100), "packets": packets,
           "capture_missed": missed}
    return {"daemons": n_daemons, "calls": calls, "seconds": seconds, "ok": ok, "failed": failed,
            "sipp_failures": {k: v for k, v in counters.items() if k.startswith("Failed") and v},
            "rtp_interval": rtp, "per_process": per_process,
            "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
            "limit": echo_limits(failed, rtp["p99_ms"], rtp_bound_ms, lag_p99, cpu, budget)}


def _media_bases(counts: list[int], ranges: list[tuple[int, int]]) -> list[int]:
    """sip_concurrency's caller media blocks, clear of every daemon's RTP range."""
    for _ in range(20):
        bases = media_bases(counts, ranges[0])
        if all(b + 4 * n + 4 < lo or b > hi for b, n in zip(bases, counts, strict=True) for lo, hi in ranges):
            return bases
    raise SystemExit("no free block of media ports for SIPp")


def _metrics(daemon: Daemon) -> str:
    with urllib.request.urlopen(f"{daemon.http}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _calls_done(daemon: Daemon) -> int:
    pattern = r'^voice_bridge_calls_total\{[^}]*transport="sip"[^}]*\} (\S+)$'
    return int(sum(float(v) for v in re.findall(pattern, _metrics(daemon), re.M)))


def add_plan_arguments(ap: argparse.ArgumentParser, calls: list[int]) -> None:
    """--daemons, --calls and --calls-per-daemon, shared by the scale-out benches."""
    ap.add_argument("--daemons", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--calls", type=int, nargs="+", default=calls, help="calls in all, each daemon count")
    ap.add_argument("--calls-per-daemon", type=int, nargs="+", metavar="N",
                    help="instead of --calls: N x daemons calls, the daemon counts back to back at each N")


def plan(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(daemons, calls) of each run in order: every --calls for each daemon count, or with
    --calls-per-daemon each N for 1, 2.. daemons one right after the other (an A/B pair
    under the same load of the box)."""
    if args.calls_per_daemon:
        return [(d, d * n) for n in args.calls_per_daemon for d in args.daemons]
    return [(d, c) for d in args.daemons for c in args.calls]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_plan_arguments(ap, [1, 60, 150])
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each call")
    ap.add_argument("--rate", type=float, default=30.0, help="new calls per second while ramping up")
    ap.add_argument("--rtp-p99-ms", type=float,
                    help="bound on the p99 interval between a daemon's RTP packets (default 25 ms, "
                         "with --daemon-cpu-quota 25 + period - quota)")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="asyncio",
                    help="the daemons' event loop")
    ap.add_argument("--keep", type=Path, help="copy each run's capture and SIPp files here")
    cpu_budget.add_arguments(ap)
    return ap


def main() -> int:
    args = parser().parse_args()
    budget = cpu_budget.from_args(args)
    os.environ["VOICE_BRIDGE_DAEMON__EVENT_LOOP"] = args.loop  # run_daemon passes the environment on
    bound = rtp_bound_ms(args.rtp_p99_ms, budget)
    runs = [run_once(d, c, args.seconds, args.rate, budget, bound, args.keep)
            for d, c in plan(args)]
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps({"bench": "kamailio_scaleout", "date": date,
                      "cpus": os.cpu_count(), "event_loop": args.loop,
                      "daemon_cpu_budget": budget.__dict__ if budget else None,
                      "bounds": {"rtp_interval_p99_ms": bound, "loop_lag_p99_ms": LAG_P99_MS,
                                 "failed_calls": 0},
                      "loadavg_at_end": os.getloadavg(), "runs": runs, "capacity": capacity(runs)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
