"""N concurrent SIPp echo calls against the real daemon; prints JSON figures.

    .venv/bin/python bench/sip_concurrency.py --calls 500 --seconds 20

Reports calls ok/failed (with SIPp's failure counters and the first lines of its error
files), the daemon's CPU (% of one core) and RSS while the calls run, UDP drops per socket
owner (daemon / SIPp, from ``ss``) and the machine's load average. RTP pacing: the interval
between consecutive outgoing RTP packets of each call, measured on the wire with tcpdump.
Only packets with consecutive sequence numbers are paired, so a packet the capture missed
(tcpdump drops under load) is counted in ``capture_missed`` instead of showing as a 40 ms
gap; a marker bit starts a new talkspurt (the silence before it is not a pacing gap).

Also: the SIPp processes' CPU (the callers share the machine), the peak receive queue of the
daemon's SIP socket, and the daemon's own pacing from /metrics (media clock wake-ups late by
more than 5 / 20 ms, ticks caught up or skipped), which tells a late daemon from a bad capture.

The callers are split over several SIPp processes (``--sipp-procs``, default one per 100
calls): one SIPp runs every call's SIP on one thread next to one RTP thread per call. In the
runs of 2026-12-01 one and five SIPps both completed 500 calls; splitting keeps a late SIPp
from being mistaken for a late daemon. The callers' media ports are bound by the bench (see
``caller_media_sinks``). README "SIP echo capacity" has the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bridge.simulator.pcap import read_udp_payloads
from bridge.simulator.procs import capture_udp, cpu_seconds, free_port, free_rtp_range, rss_mib, run_daemon
from bridge.simulator.sipp import media_scenario

_SKMEM_DROPS = re.compile(r"skmem:\([^)]*\bd(\d+)\)")
_SS_PID = re.compile(r"pid=(\d+)")


def udp_sockets_by_pid() -> dict[tuple[int, str], tuple[int, int]]:
    """(receive queue bytes, receive drops (skmem d)) of every UDP socket now, by (owner pid,
    local address)."""
    try:
        out = subprocess.run(["ss", "-uanmpH"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[tuple[int, str], tuple[int, int]] = {}
    # ss prints a socket's skmem on the line after its addresses when the output is not a tty
    for line in re.sub(r"\n\s+skmem", " skmem", out).splitlines():
        pid, drop, fields = _SS_PID.search(line), _SKMEM_DROPS.search(line), line.split()
        if pid and drop and len(fields) > 3 and fields[1].isdigit():
            found[(int(pid.group(1)), fields[3])] = (int(fields[1]), int(drop.group(1)))
    return found


class Intervals(NamedTuple):
    gaps_ms: np.ndarray  # between consecutive-sequence packets of one call
    at: np.ndarray  # capture time (s) of each interval's second packet
    packets: int
    missed: int  # packets the capture missed (sequence numbers skipped)
    all_set_up: float  # first packet of the call whose echo began last
    first_ended: float  # last packet of the call whose echo ended first
    first_packet: float


def rtp_intervals(pcap: Path) -> Intervals:
    """Intervals between consecutive-sequence packets of the RTP (not RTCP) packets in
    ``pcap``, per source port (one a call), with the time each was seen and the span in which
    every call's echo ran (after the last call was set up, before the first hang-up)."""
    by_stream: dict[int, list[tuple[float, int, bool]]] = defaultdict(list)
    for ts, sport, _dport, payload in read_udp_payloads(pcap):
        if len(payload) < 12 or 200 <= payload[1] <= 204:  # RTCP shares the port range
            continue
        seq = int.from_bytes(payload[2:4], "big")
        by_stream[sport].append((ts, seq, bool(payload[1] & 0x80)))
    gaps: list[float] = []
    at: list[float] = []
    packets = missed = 0
    for pkts in by_stream.values():
        packets += len(pkts)
        for (t0, s0, _m0), (t1, s1, m1) in itertools.pairwise(pkts):
            step = (s1 - s0) & 0xFFFF
            if step != 1:
                missed += step - 1 if step < 1000 else 0
                continue
            if not m1:
                gaps.append((t1 - t0) * 1000)
                at.append(t1)
    firsts = [pkts[0][0] for pkts in by_stream.values()] or [0.0]
    lasts = [pkts[-1][0] for pkts in by_stream.values()] or [0.0]
    return Intervals(np.array(gaps), np.array(at), packets, missed, max(firsts), min(lasts), min(firsts))


def interval_figures(gaps: np.ndarray) -> dict[str, float | int | None]:
    """p50/p99/p99.9/max of ``gaps`` (ms), how many, and how many above the 25 ms target."""
    if not gaps.size:
        return {"intervals": 0, "p50": None, "p99": None, "p999": None, "max": None, "over_25_ms": 0}
    return {"intervals": int(gaps.size),
            **{k: round(float(np.percentile(gaps, q)), 2)
               for k, q in (("p50", 50), ("p99", 99), ("p999", 99.9))},
            "max": round(float(gaps.max()), 2), "over_25_ms": int((gaps > 25).sum())}


def parse_cpus(text: str | None) -> set[int] | None:
    """'0' / '1,2' / '2-3' -> a CPU set (None when not given)."""
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def pin_threads(pid: int, cpus: set[int]) -> list[int]:
    """Every thread of ``pid`` onto ``cpus`` (threads started later inherit their creator's
    set). Returns the thread ids moved."""
    moved = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
            moved.append(int(tid))
        except OSError:  # the thread ended meanwhile
            pass
    return moved


def pin_callers(cpus: set[int]) -> None:
    """This bench onto ``cpus``: every thread of it (run_daemon's log pumps were started before;
    os.sched_setaffinity(0, ...) moves only the calling thread on Linux). Its children started
    later (tcpdump, the SIPps) and threads started later (the sampler) inherit it."""
    pin_threads(os.getpid(), cpus)


def media_clock_figures(http_port: int) -> dict[str, object]:
    """The daemon's own view of its pacing, from /metrics: ticks by timeliness and the share
    of clock wake-ups later than 5 and 20 ms. A wake-up is one group's (a tree with media clock
    groups wakes once per group in use each 20 ms, main once for all calls; not weighted by
    group size): every call of that group had its packets of that tick late, so compare the
    shares between trees with that in mind."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    ticks: dict[str, int] = {}
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("voice_bridge_media_clock_ticks_total{"):
            ticks[line.split('kind="')[1].split('"')[0]] = int(float(line.split()[-1]))
        elif line.startswith("voice_bridge_media_clock_lateness_seconds_bucket{"):
            buckets[line.split('le="')[1].split('"')[0]] = float(line.split()[-1])
    wakes = buckets.get("+Inf", 0.0)
    late = {f"over_{ms}_ms_pct": round(100 * (1 - buckets.get(le, wakes) / wakes), 2) if wakes else None
            for ms, le in (("5", "0.005"), ("20", "0.02"))}
    return {"ticks": ticks, "wake_ups": int(wakes), **late}


def runqueue_wait_s(pid: int) -> float:
    """Seconds the main (event loop) thread of ``pid`` has waited on a run queue, ready to
    run but without a CPU (/proc schedstat); 0.0 when not available."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def prioritise(pid: int, nice: int | None, rr: int | None) -> list[str]:
    """Give every thread of ``pid`` the niceness ``nice`` and/or SCHED_RR priority ``rr`` (as
    a unit's ``Nice=`` / ``CPUSchedulingPolicy=rr`` would; needs root). Returns what failed."""
    errors = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if nice is not None:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            if rr is not None:
                os.sched_setscheduler(int(tid), os.SCHED_RR, os.sched_param(rr))
        except OSError as exc:
            errors.append(f"thread {tid}: {exc}")
    return errors


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def media_bases(counts: list[int], avoid: tuple[int, int]) -> list[int]:
    """A -mp base per SIPp process: SIPp's [auto_media_port] is base + 4 * (call - 1), so
    each process needs 4 * calls ports that nobody holds now (our echo is sent there) and
    that are clear of the daemon's RTP range."""
    bases: list[int] = []
    for n in counts:
        for _ in range(50):
            base, top = free_rtp_range(4 * n + 4)
            taken = [(b, b + 4 * c + 4) for b, c in zip(bases, counts, strict=False)] + [avoid]
            if all(top < a or base > b for a, b in taken):
                bases.append(base)
                break
        else:
            raise SystemExit("no free block of media ports for SIPp")
    return bases


def caller_media_sinks(counts: list[int], bases: list[int]) -> list[socket.socket]:
    """Bound, never-read sockets on every caller's media port. SIPp plays its RTP from a raw
    socket and listens on none of these ports, so without them each echoed packet hits a
    closed port and the daemon's sendto pays for the kernel's ICMP port-unreachable path
    (+4 us a packet measured here, ~10 % of a core at 500 calls) that no real caller causes.
    A tiny receive buffer: the kernel drops what waits, which is cheap."""
    sinks = []
    for n, base in zip(counts, bases, strict=True):
        for i in range(1, n):  # SIPp itself binds the base port (and base + 2) for the first call
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            sock.bind(("127.0.0.1", base + 4 * i))
            sinks.append(sock)
    return sinks


def sipp_command(target: str, scenario: Path, calls: int, rate: float, media_base: int,
                 seconds: float, workdir: Path) -> list[str]:
    return [
        "sipp", target, "-sf", str(scenario),
        "-m", str(calls), "-l", str(calls), "-r", str(rate),
        "-nostdin", "-i", "127.0.0.1", "-p", str(free_port()),
        "-mi", "127.0.0.1", "-mp", str(media_base),
        "-timeout", f"{int(seconds + 60)}s",
        "-trace_stat", "-stf", str(workdir / "stat.csv"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
    ]


def sipp_counters(workdir: Path) -> dict[str, int]:
    """SuccessfulCall / FailedCall and every non-zero Failed* column of SIPp's last stat row."""
    path = workdir / "stat.csv"
    lines = path.read_text().splitlines() if path.exists() else []
    if len(lines) < 2:
        return {}
    row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
    out = {}
    for key, value in row.items():
        if key.endswith("(C)") and (key.startswith("Failed") or key == "SuccessfulCall(C)"):
            count = int(value or 0)
            if count or key in ("SuccessfulCall(C)", "FailedCall(C)"):
                out[key[:-3]] = count
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    ap.add_argument("--codec", default="PCMU", choices=["PCMU", "PCMA"])
    ap.add_argument("--rate", type=float, default=50.0, help="new calls per second, all SIPps together")
    ap.add_argument("--sipp-procs", type=int, default=0, help="SIPp processes (0: one per 100 calls)")
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the daemon over the steady part")
    ap.add_argument("--keep", type=Path, help="copy the capture, SIPp logs and daemon log here")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="asyncio",
                    help="the daemon's event loop")
    ap.add_argument("--daemon-nice", type=int, help="run the daemon at this niceness (e.g. -10; root)")
    ap.add_argument("--daemon-rr", type=int, help="run the daemon SCHED_RR at this priority (1-99; root)")
    ap.add_argument("--daemon-cpus", help="pin the daemon's threads to these CPUs (e.g. 0, or 0-1)")
    ap.add_argument("--callers-cpus", help="pin the SIPp callers, tcpdump and this bench to these CPUs "
                    "(e.g. 1): with --daemon-cpus 0, callers on another host, emulated")
    ap.add_argument("--tree", type=Path, help="run the daemon from this checkout (e.g. a git archive of "
                    "main) for an A/B with the same bench; default: this one")
    args = ap.parse_args()
    daemon_cpus, callers_cpus = parse_cpus(args.daemon_cpus), parse_cpus(args.callers_cpus)
    procs = args.sipp_procs or max(1, -(-args.calls // 100))
    counts = [n for n in split(args.calls, procs) if n]
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="vb-bench-") as tmp_s:
        tmp = Path(tmp_s)
        t = np.arange(int(8000 * args.seconds)) / 8000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
        scenario = media_scenario(
            tmp, args.codec, pcm, pause_ms=int(args.seconds * 1000), per_call_ports=True
        )
        env = {"VOICE_BRIDGE_LOGGING__LEVEL": "WARNING", "VOICE_BRIDGE_SIP__MAX_CALLS": str(args.calls + 10),
               "VOICE_BRIDGE_DAEMON__EVENT_LOOP": args.loop}
        if args.tree:  # its bridge package ahead of this checkout's (installed editable)
            env["PYTHONPATH"] = str(args.tree.resolve())
        with run_daemon(tmp, agent="echo", env=env, rtp_ports=2 * args.calls + 40) as daemon:
            lo, hi = daemon.rtp_range
            pid, sip_port = daemon.proc.pid, daemon.sip_port
            priority_errors = prioritise(pid, args.daemon_nice, args.daemon_rr)
            if daemon_cpus:
                pin_threads(pid, daemon_cpus)
            if callers_cpus:
                pin_callers(callers_cpus)
            # (time, daemon CPU s, SIPps' CPU s, daemon loop thread's run-queue wait s)
            samples: list[tuple[float, float, float, float]] = []
            sipps: list[subprocess.Popen[bytes]] = []

            def sipp_cpu() -> float:
                total = 0.0
                for proc in list(sipps):
                    try:
                        total += cpu_seconds(proc.pid)
                    except (OSError, IndexError, ValueError):  # exited: its share is gone
                        pass
                return total

            drops: dict[tuple[int, str], int] = {}
            queue_peak: dict[tuple[int, str], int] = defaultdict(int)
            stop = threading.Event()

            def sample() -> None:
                tick = 0
                while not stop.is_set():
                    if daemon_cpus:  # threads the daemon started since (executors) too
                        pin_threads(pid, daemon_cpus)
                    samples.append((time.monotonic(), cpu_seconds(pid), sipp_cpu(), runqueue_wait_s(pid)))
                    if tick % 2 == 0:  # sockets come and go with the calls: keep each one's last
                        for key, (queued, dropped) in udp_sockets_by_pid().items():
                            drops[key] = dropped
                            queue_peak[key] = max(queue_peak[key], queued)
                    tick += 1
                    stop.wait(0.5)

            sampler = threading.Thread(target=sample, daemon=True)
            rss_peak = 0.0
            workdirs = [tmp / f"sipp{i}" for i in range(len(counts))]
            with capture_udp(tmp / "out.pcap", f"udp and src portrange {lo}-{hi}"):
                sampler.start()
                bases = media_bases(counts, (lo, hi))
                sinks = caller_media_sinks(counts, bases)
                for workdir, n, base in zip(workdirs, counts, bases, strict=True):
                    workdir.mkdir()
                    cmd = sipp_command(f"127.0.0.1:{daemon.sip_port}", scenario, n,
                                       args.rate * n / args.calls, base, args.seconds, workdir)
                    # SIPp's stderr goes to a file: an unread pipe fills up and stalls SIPp
                    with (workdir / "stderr.txt").open("wb") as err:
                        sipps.append(
                            subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err))
                spy: subprocess.Popen[bytes] | None = None
                spy_at = time.monotonic() + args.calls / args.rate + 2  # after the ramp
                while any(p.poll() is None for p in sipps):
                    rss_peak = max(rss_peak, rss_mib(pid))
                    if args.profile and spy is None and time.monotonic() >= spy_at:
                        spy = subprocess.Popen(
                            [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid),
                             "-r", "50", "--nonblocking", "-f", "raw", "-o", str(args.profile),
                             "-d", str(int(max(2, args.seconds - 4)))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                stop.set()
                sampler.join()
                if spy is not None:
                    spy.wait(30)
                for sock in sinks:
                    sock.close()
            sipp_pids = {p.pid for p in sipps}
            daemon_log = daemon.log_lines
            affinity = {"daemon": sorted(os.sched_getaffinity(pid)),
                        "callers_and_tcpdump": sorted(os.sched_getaffinity(0)),
                        "cpus_online": os.cpu_count()}
            clock = media_clock_figures(daemon.http_port)
        iv = rtp_intervals(tmp / "out.pcap")
        gaps = iv.gaps_ms
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
            (args.keep / "daemon.log").write_text("\n".join(daemon_log))
        counters: dict[str, int] = defaultdict(int)
        errors: list[str] = []
        for workdir in workdirs:
            for key, value in sipp_counters(workdir).items():
                counters[key] += value
            for name in ("errors.log", "stderr.txt"):
                path = workdir / name
                if path.exists():
                    errors += [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()][:3]

    ok, failed = counters.get("SuccessfulCall", 0), counters.get("FailedCall", 0)
    # CPU over the steady part: after ramp-up, before the first hang-ups.
    ramp = args.calls / args.rate
    steady = [
        s for s in samples if samples[0][0] + ramp + 1 <= s[0] <= samples[0][0] + ramp + args.seconds - 2
    ]
    cpu_pct = sipp_pct = wait_share = 0.0
    if len(steady) >= 2:
        span = steady[-1][0] - steady[0][0]
        cpu_pct = 100 * (steady[-1][1] - steady[0][1]) / span
        sipp_pct = 100 * (steady[-1][2] - steady[0][2]) / span
        wait_share = (steady[-1][3] - steady[0][3]) / span

    # Ramp against steady state: every call's echo running (after the last call's first
    # packet) versus the rest, so a reader can tell whether the p99 comes from the set-up burst
    # (INVITEs and ACKs of the last calls while the first ones' media run) or from steady load.
    steady_mask = (iv.at > iv.all_set_up) & (iv.at <= iv.first_ended)
    ramp_mask = iv.at <= iv.all_set_up
    print(
        json.dumps(
            {
                "calls": args.calls,
                "daemon_tree": str((args.tree or Path(__file__).resolve().parents[1]).resolve()),
                "event_loop": args.loop,
                # the daemon's scheduling: default (nice 0, SCHED_OTHER) unless set
                "daemon_nice": args.daemon_nice,
                "daemon_sched_rr": args.daemon_rr,
                "daemon_priority_errors": priority_errors,
                # CPUs the daemon and the callers (SIPps, tcpdump, the bench) were allowed on
                "affinity": affinity,
                "call_seconds": args.seconds,
                "codec": args.codec,
                "sipp_processes": len(counts),
                "calls_ok": ok,
                "calls_failed": failed,
                "sipp_failures": {k: v for k, v in counters.items() if k.startswith("Failed") and v},
                "sipp_rc": [p.returncode for p in sipps],
                "sipp_errors_head": errors[:6],
                "udp_receive_drops": {
                    "daemon": sum(v for (p, _a), v in drops.items() if p == pid),
                    "sipp": sum(v for (p, _a), v in drops.items() if p in sipp_pids),
                    "daemon_worst_sockets": sorted(
                        ((v, a) for (p, a), v in drops.items() if p == pid and v), reverse=True)[:3],
                    "daemon_sip_socket": drops.get((pid, f"127.0.0.1:{sip_port}"), 0),
                },
                "daemon_sip_recv_queue_peak_kib": round(queue_peak[(pid, f"127.0.0.1:{sip_port}")] / 1024),
                "daemon_cpu_pct_of_one_core": round(cpu_pct, 1),
                "daemon_rss_peak_mib": round(rss_peak, 1),
                # share of the steady part the daemon's loop thread was ready to run but waited
                # for a CPU: above ~0.1 the box (the callers, other load), not the daemon, sets
                # the pacing figures
                "daemon_loop_runqueue_wait_share": round(wait_share, 3),
                # the callers share the two cores: their RTP threads are part of the load
                "sipp_cpu_pct_of_one_core": round(sipp_pct, 1),
                "load_average_1m": {"before": round(load_before[0], 2),
                                    "after": round(os.getloadavg()[0], 2)},
                "daemon_media_clock": clock,
                "rtp_out_packets": iv.packets,
                "rtp_out_capture_missed": iv.missed,
                "rtp_out_interval_ms": interval_figures(gaps),
                # from the first call's first echoed packet to the last call's
                "rtp_out_interval_ms_ramp": {
                    "seconds": round(iv.all_set_up - iv.first_packet, 2),
                    **interval_figures(gaps[ramp_mask])},
                # every call's echo running: after the ramp, before the first hang-up
                "rtp_out_interval_ms_steady": {
                    "seconds": round(max(0.0, iv.first_ended - iv.all_set_up), 2),
                    **interval_figures(gaps[steady_mask])},
            },
            indent=2,
        )
    )
    return 0 if failed == 0 and ok == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
