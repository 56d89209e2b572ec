"""N concurrent SIPp echo calls against the real daemon; prints JSON figures.

    .venv/bin/python bench/sip_concurrency.py --calls 200 --seconds 20

Reports calls ok/failed, the daemon's CPU (% of one core) and RSS while the calls run, and the
interval between consecutive outgoing RTP packets of each call (p50/p99/max, measured on the
wire with tcpdump). Targets on the 2-core box: 200 calls, 0 failed, p99 <= 25 ms, < 60 % CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bridge.simulator.pcap import read_udp_payloads
from bridge.simulator.procs import capture_udp, cpu_seconds, free_port, rss_mib, run_daemon
from bridge.simulator.sipp import media_scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    ap.add_argument("--codec", default="PCMU", choices=["PCMU", "PCMA"])
    ap.add_argument("--rate", type=float, default=50.0, help="new calls per second while ramping up")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vb-bench-") as tmp_s:
        tmp = Path(tmp_s)
        t = np.arange(int(8000 * args.seconds)) / 8000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
        scenario = media_scenario(
            tmp, args.codec, pcm, pause_ms=int(args.seconds * 1000), per_call_ports=True
        )
        env = {"VOICE_BRIDGE_LOGGING__LEVEL": "WARNING", "VOICE_BRIDGE_SIP__MAX_CALLS": str(args.calls + 10)}
        with run_daemon(tmp, agent="echo", env=env, rtp_ports=2 * args.calls + 40) as daemon:
            lo, hi = daemon.rtp_range
            pid = daemon.proc.pid
            samples: list[tuple[float, float]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((time.monotonic(), cpu_seconds(pid)))
                    stop.wait(0.5)

            sampler = threading.Thread(target=sample, daemon=True)
            rss_peak = 0.0
            with capture_udp(tmp / "out.pcap", f"udp and src portrange {lo}-{hi}"):
                sampler.start()
                sipp = subprocess.Popen(
                    [
                        "sipp",
                        f"127.0.0.1:{daemon.sip_port}",
                        "-sf",
                        str(scenario),
                        "-m",
                        str(args.calls),
                        "-l",
                        str(args.calls),
                        "-r",
                        str(args.rate),
                        "-nostdin",
                        "-i",
                        "127.0.0.1",
                        "-p",
                        str(free_port()),
                        "-mi",
                        "127.0.0.1",
                        "-mp",
                        str(free_port()),
                        "-timeout",
                        f"{int(args.seconds + 60)}s",
                        "-trace_stat",
                        "-stf",
                        str(tmp / "stat.csv"),
                    ],
                    cwd=tmp,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                while sipp.poll() is None:
                    rss_peak = max(rss_peak, rss_mib(pid))
                    time.sleep(0.5)
                stop.set()
                sampler.join()
            stats = (tmp / "stat.csv").read_text().splitlines() if (tmp / "stat.csv").exists() else []
        # Packet times per talkspurt: the marker bit starts a new one, and the pause before it
        # (the caller was silent, so the echo was too) is not a pacing gap.
        by_stream: dict[int, list[list[float]]] = defaultdict(list)
        for ts, sport, _dport, payload in read_udp_payloads(tmp / "out.pcap"):
            # RTP only: RTCP (packet types 200-204 in byte 1) shares the port range.
            if len(payload) < 12 or 200 <= payload[1] <= 204:
                continue
            spurts = by_stream[sport]
            if payload[1] & 0x80 or not spurts:
                spurts.append([])
            spurts[-1].append(ts)

    ok = failed = 0
    if len(stats) >= 2:
        head = stats[0].split(";")
        last = stats[-1].split(";")
        row = dict(zip(head, last, strict=False))
        ok = int(row.get("SuccessfulCall(C)", 0))
        failed = int(row.get("FailedCall(C)", 0))

    # CPU over the steady part: after ramp-up, before the first hang-ups.
    ramp = args.calls / args.rate
    steady = [
        s for s in samples if samples[0][0] + ramp + 1 <= s[0] <= samples[0][0] + ramp + args.seconds - 2
    ]
    cpu_pct = 0.0
    if len(steady) >= 2:
        cpu_pct = 100 * (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])

    gaps = (
        np.concatenate([np.diff(v) for spurts in by_stream.values() for v in spurts if len(v) > 1]) * 1000
        if by_stream
        else np.array([])
    )
    print(
        json.dumps(
            {
                "calls": args.calls,
                "call_seconds": args.seconds,
                "codec": args.codec,
                "calls_ok": ok,
                "calls_failed": failed,
                "sipp_rc": sipp.returncode,
                "daemon_cpu_pct_of_one_core": round(cpu_pct, 1),
                "daemon_rss_peak_mib": round(rss_peak, 1),
                "rtp_out_packets": int(sum(len(v) for spurts in by_stream.values() for v in spurts)),
                "rtp_out_interval_ms": {
                    "p50": round(float(np.percentile(gaps, 50)), 2) if gaps.size else None,
                    "p99": round(float(np.percentile(gaps, 99)), 2) if gaps.size else None,
                    "max": round(float(gaps.max()), 2) if gaps.size else None,
                },
            },
            indent=2,
        )
    )
    return 0 if failed == 0 and ok == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
