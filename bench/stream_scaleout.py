"""Plivo stream echo calls to 1 or 2 daemons behind ONE stream URL; prints JSON figures.

    .venv/bin/python bench/stream_scaleout.py --daemons 1 2 --calls 20 60
    .venv/bin/python bench/stream_scaleout.py --daemon-cpu-quota 0.3 --daemons 1 --calls 20 30 40 50

Every daemon (`voice-bridge run`, echo agent) is started with the same
``daemon.stream_listen = "127.0.0.1:PORT"``: their listeners share the port (SO_REUSEPORT) and
the callers all dial ``ws://127.0.0.1:PORT/stream``; the kernel hands each new connection to
one of the listeners. The callers speak Plivo's stream protocol as the project's Plivo stream
simulator does (upgrades signed with the Plivo auth token, the XML server's stream token in
extraHeaders, mu-law media every 20 ms, playAudio played out as Plivo's buffer does), in child
processes (one per ``--callers-per-process`` calls, 50), calls started over ``--ramp-s``; each
plays a 440 Hz tone for ``--seconds`` and hangs up. ``--callers lean`` (the default) is the lean
load generator (bridge/simulator/plivo/stream_load.py: one timer a process, a raw WebSocket
client a call, ~1/N the CPU a stream, see README); ``--callers simulator`` the reference
simulator (stream_client.py: one websockets client and task a call), whose CPU on the same
cores broke the echo bound before two daemons did. Each run reports the callers' CPU a stream
and, for the lean ones, how late their timer ran: over 20 ms (p99, one media interval) the
run's limit names the callers, not the daemons.

Per (daemons, calls): streams ok / failed, how the kernel spread them (each daemon's
``voice_bridge_calls_total{transport="stream"}``), per daemon the CPU over the steady part,
loop lag, run-queue wait and (with ``--daemon-cpu-quota``) the cgroup's throttling, and the
echo as the callers heard it: audio heard per call against the tone sent, and gaps (20 ms ticks
of silence between the first and the last echoed frame: a late daemon leaves Plivo's buffer
empty). "limit": failed streams, a call that heard less than 95 % of its tone back, gaps over
1 % of the echoed ticks, loop lag p99 over 50 ms, and without a budget a daemon over 80 % of a
core. "capacity" as in kamailio_scaleout.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import socket
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import cpu_budget  # noqa: E402
from cpu_budget import Budget, CpuGroup  # noqa: E402
from kamailio_scaleout import (  # noqa: E402
    LAG_P99_MS,
    Sampler,
    _daemons,
    _loop_lag_p99_ms,
    _metrics,
    add_plan_arguments,
    capacity,
    plan,
)
from sip_concurrency import split  # noqa: E402

from bridge.simulator.procs import cpu_seconds, free_port  # noqa: E402

SECRET = "bench-stream-secret"  # the XML server's stream token secret (VOICE_BRIDGE_STREAM_SECRET)
AUTH_TOKEN = "YmVuY2gtcGxpdm8tYXV0aC10b2tlbg"  # PLIVO_AUTH_TOKEN: the simulator signs upgrades with it
CALLS_PER_PROCESS = 50
HEARD_MIN = 0.95
GAPS_MAX = 0.01
CALLERS_LATE_MS = 20.0  # the lean callers' timer p99 lateness (one media interval) over which a run is theirs
TAIL_S = 1.0  # silence each caller plays after its tone before hanging up


def tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * 440 * t + 0.3) * 8000).astype("<i2").tobytes()


def echo_figures(heard: bytes) -> tuple[int, int]:
    """(echoed ticks, silent ticks between the first and the last echoed one) of what a caller
    heard: s16le 8 kHz, one 20 ms frame a tick, silence where Plivo's buffer was empty."""
    frames = np.frombuffer(heard[: len(heard) // 320 * 320], dtype="<i2").reshape(-1, 160)
    voiced = np.flatnonzero(np.abs(frames.astype(np.int32)).max(axis=1) > 0) if len(frames) else frames
    if not len(voiced):
        return 0, 0
    span = int(voiced[-1] - voiced[0] + 1)
    return len(voiced), span - len(voiced)


def serve_callers(conn: Connection, url: str, first: int, calls: int, total: int, ramp_s: float,
                  seconds: float) -> None:
    """Child process: calls ``first``..``first + calls - 1`` of ``total``, started over ``ramp_s``,
    by the reference simulator (one websockets client and one task per call)."""
    from bridge.callfacts import encode_headers, stream_token
    from bridge.simulator.plivo.network import NetworkProfile
    from bridge.simulator.plivo.stream_client import PlivoStreamClient

    pcm = tone(seconds)

    async def one(n: int) -> dict[str, Any]:
        await asyncio.sleep(ramp_s * n / total)
        uuid = f"scaleout-{n}"
        client = PlivoStreamClient(url, call_uuid=uuid, auth_token=AUTH_TOKEN, network=NetworkProfile.none(),
                                   extra_headers=encode_headers({"Token": stream_token(SECRET, uuid, {})}))
        try:
            result = await client.run(pcm, tail_s=TAIL_S, max_s=seconds + 60)
        except Exception as exc:  # a refused or dropped stream is a result, not a crash
            return {"error": type(exc).__name__}
        echoed, gaps = echo_figures(result.heard)
        return {"close_code": result.close_code, "ended_by": result.ended_by,
                "heard_share": round(result.agent_audio_ms / (seconds * 1000), 3),
                "echoed_ticks": echoed, "gap_ticks": gaps, "bad_messages": result.bad_messages}

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        cpu0, t0 = time.process_time(), time.monotonic()
        results = list(await asyncio.gather(*(one(n) for n in range(first, first + calls))))
        return results, {"cpu_s": time.process_time() - cpu0, "wall_s": time.monotonic() - t0}

    conn.send(asyncio.run(main()))


def serve_lean_callers(conn: Connection, url: str, first: int, calls: int, total: int, ramp_s: float,
                       seconds: float) -> None:
    """Child process: the same calls by the lean load generator (bridge/simulator/plivo/
    stream_load.py: one timer for the process, a raw WebSocket client per call)."""
    from bridge.callfacts import encode_headers, stream_token
    from bridge.simulator.plivo.stream_load import LeanCaller, LoadPool

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        pool = LoadPool(tone(seconds), tail_s=TAIL_S)
        uuids = [f"scaleout-{n}" for n in range(first, first + calls)]
        callers = [LeanCaller(url, uuid, auth_token=AUTH_TOKEN,
                              extra_headers=encode_headers({"Token": stream_token(SECRET, uuid, {})}))
                   for uuid in uuids]
        out = await pool.run(callers, [ramp_s * n / total for n in range(first, first + calls)])
        results: list[dict[str, Any]] = [
            {"error": r.error} if r.error else
            {"close_code": r.close_code, "ended_by": r.ended_by,
             "heard_share": round(r.agent_audio_ms / (seconds * 1000), 3),
             "echoed_ticks": r.echoed_ticks, "gap_ticks": r.gap_ticks, "bad_messages": r.bad_messages}
            for r in out]
        return results, {"cpu_s": pool.stats.cpu_s, "wall_s": pool.stats.wall_s,
                         "timer_late_p99_ms": pool.stats.late_p99_ms(),
                         "timer_late_max_ms": max(pool.stats.late_ms, default=0.0)}

    conn.send(asyncio.run(main()))


CALLERS = {"lean": serve_lean_callers, "simulator": serve_callers}


def stream_limits(results: list[dict[str, Any]], lag_p99_ms: list[float | None], cpu: list[float],
                  budget: Budget | None, callers_late_ms: float = 0.0) -> list[str] | None:
    """The bounds a run broke (see the module's doc); ``callers_late_ms``: the lean callers'
    timer p99 lateness (over CALLERS_LATE_MS the run is the load generator's limit)."""
    hit = []
    ok = [r for r in results if "error" not in r and r["ended_by"] == "caller" and not r["bad_messages"]]
    if len(ok) < len(results):
        hit.append("failed streams")
    if any(r["heard_share"] < HEARD_MIN for r in ok):
        hit.append(f"a call heard < {HEARD_MIN:.0%} of its tone")
    echoed = sum(r["echoed_ticks"] for r in ok)
    if echoed and sum(r["gap_ticks"] for r in ok) / echoed > GAPS_MAX:
        hit.append(f"echo gaps > {GAPS_MAX:.0%}")
    if any(lag is None or lag > LAG_P99_MS for lag in lag_p99_ms):
        hit.append(f"loop lag p99 > {LAG_P99_MS:g} ms")
    if budget is None and any(c > 80 for c in cpu):
        hit.append("cpu > 80 % of a core")
    if callers_late_ms > CALLERS_LATE_MS:  # the callers fell behind: their gaps, not the daemons'
        hit.append(f"callers' timer p99 late > {CALLERS_LATE_MS:g} ms")
    return hit or None


def _stream_calls(text: str) -> int:
    pattern = r'^voice_bridge_calls_total\{[^}]*transport="stream"[^}]*\} (\S+)$'
    return int(sum(float(v) for v in re.findall(pattern, text, re.M)))


def run_once(n_daemons: int, calls: int, seconds: float, ramp_s: float, budget: Budget | None,
             per_process: int = CALLS_PER_PROCESS, callers: str = "lean",
             max_calls: int = 0) -> dict[str, Any]:
    port = free_port(socket.SOCK_STREAM)
    config = f'[daemon]\nstream_listen = "127.0.0.1:{port}"\n[plivo]\nnonce_db = ":memory:"\n'
    env = {"VOICE_BRIDGE_STREAM_SECRET": SECRET, "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    if max_calls:  # each daemon's sip.max_calls (default: room for every call)
        env["VOICE_BRIDGE_SIP__MAX_CALLS"] = str(max_calls)
    url = f"ws://127.0.0.1:{port}/stream"
    load_before = os.getloadavg()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="vb-streamscale-") as tmp_s:
        tmp = Path(tmp_s)
        groups: list[CpuGroup] = []
        with _daemons(tmp, n_daemons, calls, config=config, env=env, budget=budget, groups=groups) as daemons:
            parts = [n for n in split(calls, -(-calls // per_process)) if n]
            children, pipes, first = [], [], 0
            with Sampler(daemons, groups) as sampler:
                for n in parts:
                    parent, child = ctx.Pipe()
                    proc = ctx.Process(target=CALLERS[callers], daemon=True,
                                       args=(child, url, first, n, calls, ramp_s, seconds))
                    proc.start()
                    children.append(proc)
                    pipes.append(parent)
                    first += n
                started, callers_cpu = time.monotonic(), 0.0
                results: list[dict[str, Any]] = []
                stats: list[dict[str, Any]] = []
                for parent, proc in zip(pipes, children, strict=True):
                    if parent.poll(seconds + ramp_s + 120):
                        try:  # the callers' CPU before they exit: the load generator's share
                            callers_cpu += cpu_seconds(proc.pid) if proc.pid else 0.0
                        except (OSError, IndexError, ValueError):
                            pass
                        got, stat = parent.recv()
                        results += got
                        stats.append(stat)
                    proc.join(10)
                    if proc.is_alive():
                        proc.terminate()
                        proc.join()
            texts = [_metrics(d) for d in daemons]
            lag_p99 = [_loop_lag_p99_ms(d) for d in daemons]
    results += [{"error": "caller process gave no result"}] * (calls - len(results))
    window = (ramp_s + 2, ramp_s + seconds - 1)  # every call up
    cpu = sampler.cpu_pct(*window)
    spread = [_stream_calls(t) for t in texts]
    rows = sampler.per_process(cpu, spread)
    for row, pressure, lag in zip(rows, sampler.pressure(*window), lag_p99, strict=True):
        row.update(pressure, loop_lag_p99_ms=lag)
        if budget is not None:
            row["cpu_pct_of_budget"] = round(row["cpu_pct_of_core"] / budget.cores, 1)
    ok = [r for r in results if "error" not in r and r["ended_by"] == "caller" and not r["bad_messages"]]
    echoed = sum(r["echoed_ticks"] for r in ok)
    heard = [r["heard_share"] for r in ok]
    callers_late = max((st.get("timer_late_p99_ms", 0.0) for st in stats), default=0.0)
    limit = stream_limits(results, lag_p99, cpu, budget, callers_late)
    return {"daemons": n_daemons, "calls": calls, "seconds": seconds, "stream_url": "one (shared port)",
            "ok": len(ok), "failed": calls - len(ok),
            "errors": sorted({str(r.get("error") or r.get("close_code")) for r in results if r not in ok}),
            "kernel_spread": spread, "caller_processes": len(parts),
            "callers": callers,
            "callers_cores_busy": round(callers_cpu / (time.monotonic() - started), 2),
            # the callers' CPU while calling (not their start-up) per stream, % of a core
            "callers_cpu_pct_per_stream": round(100 * sum(st["cpu_s"] for st in stats)
                                                / (calls * (seconds + TAIL_S)), 3) if stats else None,
            "callers_timer_late_p99_ms": callers_late if callers == "lean" else None,
            "echo": {"heard_share_min": min(heard) if heard else None,
                     "heard_share_p50": float(np.median(heard)) if heard else None,
                     "gap_share": round(sum(r["gap_ticks"] for r in ok) / echoed, 4) if echoed else None},
            "per_process": rows,
            "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
            "limit": limit}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_plan_arguments(ap, [20, 60])
    ap.add_argument("--seconds", type=float, default=15.0, help="tone each caller plays")
    ap.add_argument("--ramp-s", type=float, default=5.0, help="calls start spread over this long")
    ap.add_argument("--callers-per-process", type=int, default=CALLS_PER_PROCESS,
                    help="simulated callers per child process (each is one Python event loop)")
    ap.add_argument("--callers", choices=sorted(CALLERS), default="lean",
                    help="the load generator: lean (stream_load.py, default) or the reference simulator")
    ap.add_argument("--max-calls-per-daemon", type=int, default=0,
                    help="each daemon's sip.max_calls, e.g. one daemon's capacity at the budget: at it "
                         "a daemon answers 503, or leaves the stream port's group "
                         "(daemon.stream_leave_when_busy); 0 (default) = room for every call")
    cpu_budget.add_arguments(ap)
    return ap


def main() -> int:
    args = parser().parse_args()
    budget = cpu_budget.from_args(args)
    runs = [run_once(d, c, args.seconds, args.ramp_s, budget, args.callers_per_process, args.callers,
                     args.max_calls_per_daemon)
            for d, c in plan(args)]
    print(json.dumps({"bench": "stream_scaleout", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "cpus": os.cpu_count(), "daemon_cpu_budget": budget.__dict__ if budget else None,
                      "bounds": {"failed_streams": 0, "heard_share_min": HEARD_MIN, "gap_share_max": GAPS_MAX,
                                 "loop_lag_p99_ms": LAG_P99_MS},
                      "runs": runs, "capacity": capacity(runs)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
