"""SIPp echo calls through the shipped Kamailio front to 1 or 2 daemons; prints JSON figures.

    .venv/bin/python bench/kamailio_scaleout.py --daemons 1 2 --calls 1 60 150 --seconds 15

For each (daemons, calls) pair: calls ok/failed (SIPp's statistics), how Kamailio spread them,
and per daemon process the CPU (% of one core, over the steady part with every call up), peak
RSS, RSS per call and the worst event-loop lag its /healthz reported. Each call plays RTP
(a 440 Hz tone, 20 ms packets) that the daemon echoes. "limit" names what ran out first:
failed calls, a daemon over 80 % of a core, or loop lag over 50 ms. On a shared 2-core machine
SIPp and Kamailio compete with the daemons for the same cores: read the figures as such.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# devkit/ is not installed: run from the checkout (as the other benches do).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bridge.simulator.procs import Daemon, cpu_seconds, free_port, rss_mib, run_daemon
from bridge.simulator.sipp import media_scenario
from devkit.kamailio import Front, run_front


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
             env: dict[str, str] | None = None, hosts: list[str] | None = None) -> Iterator[list[Daemon]]:
    """``n`` daemons, each ready for every call; ``hosts``: the address of each (default 127.0.0.1)."""
    env = {"VOICE_BRIDGE_LOGGING__LEVEL": "WARNING", "VOICE_BRIDGE_SIP__MAX_CALLS": str(calls + 10),
           **(env or {})}
    with contextlib.ExitStack() as stack:
        out = []
        for i in range(n):
            (tmp / f"d{i}").mkdir()
            out.append(stack.enter_context(run_daemon(tmp / f"d{i}", agent=agent, env=env, config=config,
                                                      rtp_ports=2 * calls + 40, ready_timeout=60,
                                                      host=hosts[i] if hosts else "127.0.0.1")))
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
    """Every 0.5 s in a thread: each daemon's CPU seconds, peak RSS and worst /healthz loop lag."""

    def __init__(self, daemons: list[Daemon]) -> None:
        self.daemons = daemons
        self.samples: list[tuple[float, list[float]]] = []
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
            self.samples.append((time.monotonic(), [cpu_seconds(d.proc.pid) for d in self.daemons]))
            for i, d in enumerate(self.daemons):
                self.rss_peak[i] = max(self.rss_peak[i], rss_mib(d.proc.pid))
                try:
                    lag = float(_health(d)["load"]["loop_lag_max_ms"])
                except OSError:  # no answer in 5 s (a timeout is an OSError): the loop is that late
                    self.health_timeouts[i] += 1
                    lag = 5000.0
                self.lag_max[i] = max(self.lag_max[i], lag)
            self._stop.wait(0.5)

    def cpu_pct(self, since_s: float, until_s: float) -> list[float]:
        """Each daemon's CPU (% of one core) between ``since_s`` and ``until_s`` after the start."""
        steady = [s for s in self.samples if self.start + since_s <= s[0] <= self.start + until_s]
        if len(steady) < 2:
            return [0.0] * len(self.daemons)
        span = steady[-1][0] - steady[0][0]
        return [round(100 * (steady[-1][1][i] - steady[0][1][i]) / span, 1) for i in range(len(self.daemons))]

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


def run_once(n_daemons: int, calls: int, seconds: float, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vb-scaleout-") as tmp_s:
        tmp = Path(tmp_s)
        t = np.arange(int(8000 * seconds)) / 8000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
        scenario = media_scenario(tmp, "PCMU", pcm, pause_ms=int(seconds * 1000), per_call_ports=True,
                                  routed=True)
        with _daemons(tmp, n_daemons, calls) as daemons, \
                run_front(tmp / "k", addresses(daemons), probe_interval_s=2) as front:
            wait_all_active(front)
            with Sampler(daemons) as sampler:
                sipp = subprocess.run(
                    ["sipp", front.target, "-sf", str(scenario), "-m", str(calls), "-l", str(calls),
                     "-r", str(rate), "-nostdin", "-i", "127.0.0.1", "-p", str(free_port()),
                     "-mi", "127.0.0.1", "-mp", str(free_port()), "-timeout", f"{int(seconds + 60)}s",
                     "-trace_stat", "-stf", str(tmp / "stat.csv")],
                    cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                    timeout=seconds + 120,
                )  # fmt: skip
            per_daemon_calls = [_calls_done(d) for d in daemons]
            stats = (tmp / "stat.csv").read_text().splitlines() if (tmp / "stat.csv").exists() else []
    ok = failed = 0
    if len(stats) >= 2:
        row = dict(zip(stats[0].split(";"), stats[-1].split(";"), strict=False))
        ok, failed = int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    ramp = calls / rate
    cpu = sampler.cpu_pct(ramp + 1, ramp + seconds - 2)  # the steady part: every call up
    return {"daemons": n_daemons, "calls": calls, "seconds": seconds, "ok": ok, "failed": failed,
            "sipp_rc": sipp.returncode, "per_process": sampler.per_process(cpu, per_daemon_calls),
            "limit": limits(failed, cpu, sampler.lag_max)}


def _calls_done(daemon: Daemon) -> int:
    import re
    import urllib.request

    with urllib.request.urlopen(f"{daemon.http}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = r'^voice_bridge_calls_total\{[^}]*transport="sip"[^}]*\} (\S+)$'
    return int(sum(float(v) for v in re.findall(pattern, text, re.M)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--daemons", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 60, 150])
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each call")
    ap.add_argument("--rate", type=float, default=30.0, help="new calls per second while ramping up")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="asyncio",
                    help="the daemons' event loop")
    args = ap.parse_args()
    os.environ["VOICE_BRIDGE_DAEMON__EVENT_LOOP"] = args.loop  # run_daemon passes the environment on
    runs = [run_once(d, c, args.seconds, args.rate) for d in args.daemons for c in args.calls]
    print(json.dumps({"bench": "kamailio_scaleout", "date": time.strftime("%Y-%m-%d"),
                      "cpus": os.cpu_count(), "event_loop": args.loop,
                      "loadavg_at_end": os.getloadavg(), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
