"""A fixed CPU budget per daemon process with a cgroup v1 ``cpu`` controller (benches only).

On a 2-core box the load generator (SIPp, Kamailio, tcpdump, the provider fakes) shares the
cores with the daemons, so "two daemons carry twice the calls of one" cannot be shown by
giving each daemon a whole core. Instead every daemon gets the same budget B < 1 core: its
own cgroup with ``cpu.cfs_quota_us = B * cpu.cfs_period_us`` (the cap) and a high
``cpu.shares`` (so the other processes on the box cannot take the budget away from it). Then
one daemon's capacity at B and two daemons' capacity at B each are compared; the load
generator keeps the rest of the machine.

The period is short (10 ms by default, the kernel's default is 100 ms): a daemon that uses its
quota early in a period is not run again until the period ends, so with 100 ms and B = 0.3 it
could sit 70 ms without a CPU, 3.5 RTP intervals, a gap the budget itself created. With 10 ms
the longest such pause is 7 ms, under half an RTP interval, at the price of more scheduler
work (one refill per period; the kernel takes 1 ms as the shortest period).

Needs root and a writable cgroup v1 cpu hierarchy (``/sys/fs/cgroup/cpu``). The groups are
removed at exit (any process still in one goes back to the parent group first).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
MIN_PERIOD_US = 1000  # the kernel refuses a shorter cfs period or quota
MAX_PERIOD_US = 1_000_000
DEFAULT_PERIOD_MS = 10.0
DEFAULT_SHARES = 10240  # 10x a nice-0 task or a default group: the budget is also (nearly) guaranteed


@dataclass(frozen=True)
class Budget:
    """B cores for each daemon: ``quota_us`` of CPU time every ``period_us``, ``shares`` weight."""

    cores: float
    period_us: int
    quota_us: int
    shares: int


def budget(cores: float, period_ms: float = DEFAULT_PERIOD_MS, shares: int = DEFAULT_SHARES,
           cpus: int | None = None) -> Budget:
    """The cfs values for ``cores`` of CPU per daemon; ValueError with the reason if unusable."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    if not cores > 0:
        raise ValueError(f"a CPU budget must be above 0 cores, not {cores}")
    if cores > cpus:
        raise ValueError(f"a CPU budget of {cores} cores is more than this machine's {cpus}")
    period_us = round(period_ms * 1000)
    if not MIN_PERIOD_US <= period_us <= MAX_PERIOD_US:
        raise ValueError(f"the cfs period must be 1-1000 ms, not {period_ms} ms")
    quota_us = round(cores * period_us)
    if quota_us < MIN_PERIOD_US:
        raise ValueError(f"{cores} cores of a {period_ms} ms period is {quota_us} us: the kernel's "
                         f"shortest quota is {MIN_PERIOD_US} us (use a longer period)")
    if not 2 <= shares <= 262144:
        raise ValueError(f"cpu.shares must be 2-262144, not {shares}")
    return Budget(cores=cores, period_us=period_us, quota_us=quota_us, shares=shares)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The benches' options: --daemon-cpu-quota B, --cfs-period-ms, --daemon-cpu-shares."""
    ap.add_argument("--daemon-cpu-quota", type=float, metavar="CORES",
                    help="each daemon in its own cgroup capped at this many cores "
                         "(e.g. 0.3; root, cgroup v1)")
    ap.add_argument("--cfs-period-ms", type=float, default=DEFAULT_PERIOD_MS,
                    help="the cgroup's cfs period (the quota is refilled this often)")
    ap.add_argument("--daemon-cpu-shares", type=int, default=DEFAULT_SHARES,
                    help="the cgroup's cpu.shares (1024: a plain process's weight)")


def from_args(args: argparse.Namespace) -> Budget | None:
    """The Budget the options ask for (None: no budget); SystemExit with the reason if unusable."""
    if args.daemon_cpu_quota is None:
        return None
    try:
        return budget(args.daemon_cpu_quota, args.cfs_period_ms, args.daemon_cpu_shares)
    except ValueError as exc:
        raise SystemExit(f"--daemon-cpu-quota: {exc}") from None


@dataclass
class CpuGroup:
    """One cgroup with a Budget; ``add(pid)`` moves a process (all its threads) into it.
    A context manager: at exit its processes go back to the parent group and it is removed."""

    name: str
    spec: Budget
    root: Path = CGROUP_CPU
    rmdir: Callable[[Path], None] = os.rmdir  # tests on a plain directory pass another
    pids: list[int] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.root / self.name

    def __enter__(self) -> CpuGroup:
        self.path.mkdir()
        try:
            # the period first: the kernel checks the quota against it
            (self.path / "cpu.cfs_period_us").write_text(str(self.spec.period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(self.spec.quota_us))
            (self.path / "cpu.shares").write_text(str(self.spec.shares))
        except BaseException:
            self.rmdir(self.path)
            raise
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))
        self.pids.append(pid)

    def stat(self) -> dict[str, int]:
        """cpu.stat: nr_periods, nr_throttled, throttled_time (ns), as the kernel counts them."""
        try:
            text = (self.path / "cpu.stat").read_text()
        except OSError:
            return {}
        return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip())}

    def __exit__(self, *exc: object) -> None:
        leftover = self.path / "cgroup.procs"
        if leftover.exists():
            for pid in leftover.read_text().split():
                try:
                    (self.root / "cgroup.procs").write_text(pid)
                except OSError:  # exited meanwhile
                    pass
        self.rmdir(self.path)


def throttled(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """What the cap did between two cpu.stat readings: periods, the share throttled, time lost."""
    periods = after.get("nr_periods", 0) - before.get("nr_periods", 0)
    hit = after.get("nr_throttled", 0) - before.get("nr_throttled", 0)
    lost_ns = after.get("throttled_time", 0) - before.get("throttled_time", 0)
    return {"periods": periods, "throttled_share": round(hit / periods, 3) if periods else 0.0,
            "throttled_s": round(lost_ns / 1e9, 3)}
