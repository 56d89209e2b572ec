"""The full conversation on the Plivo stream path, ONE stream URL, 1 or 2 daemons at a CPU
budget each; prints JSON figures (issue 13, target 3 on the stream path).

    uptime; .venv/bin/python bench/stream_conversation_scaleout.py --daemon-cpu-quota 0.3 \
        --daemons 1 2 --calls-per-daemon 1 10 15 20

Processes: the provider fakes (voice_to_voice.py's process and latency profile: the REAL
Deepgram/OpenAI/ElevenLabs SDKs in the daemons talk to them, as in sip_conversation_capacity.py),
the daemons (`voice-bridge run`, conversation agent, all with the same
``daemon.stream_listen``: SO_REUSEPORT, one URL), and the lean stream callers
(bridge/simulator/plivo/stream_load.py: signed upgrades, the XML server's token, one process per
50 calls). Each caller plays stream_capacity.py's shape (silence while the greeting plays, then
``--turns`` espeak-ng questions with room for each answer) and hangs up.

Per (daemons, calls): streams ok / failed, the kernel's split, per daemon CPU (% of budget),
throttling and loop lag p99, replies and voice-to-voice from the daemons' turn-latency
histogram, and as the callers heard it (their playout, 20 ms ticks): voice-to-voice from a
question's last voiced sample to the first voiced frame of the agent after it, and replies
heard. The capacity bound is sip_conversation_capacity.py's: no failed stream, every reply
heard, wire voice-to-voice p95 within ``--v2v-p95-ms`` (default 1.15x the 1-call run's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
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
    Sampler,
    _daemons,
    _loop_lag_p99_ms,
    _metrics,
    add_plan_arguments,
    plan,
)
from sip_concurrency import split  # noqa: E402
from sip_conversation_capacity import (  # noqa: E402
    REPLY_WINDOW_S,
    VOICED,
    _fakes,
    _toml,
    daemon_figures,
    question_spans,
    report,
)
from stream_capacity import caller_audio  # noqa: E402
from stream_scaleout import AUTH_TOKEN, CALLS_PER_PROCESS, SECRET, TAIL_S, _stream_calls  # noqa: E402
from voice_to_voice import QUESTIONS, cloud_settings, pct, speak  # noqa: E402

from bridge.simulator.procs import free_port  # noqa: E402
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY  # noqa: E402


def daemon_config(fakes_url: str, tts: str, port: int, max_calls: int | None = None) -> str:
    """The conversation against the fakes, listening for streams on the shared port
    (``max_calls``: each daemon's ``sip.max_calls``, the calls it takes before it steps out of
    the port's group; None: the default)."""
    values = cloud_settings(fakes_url, tts).model_dump(mode="json", exclude_defaults=True)
    values.setdefault("daemon", {}).update(agent="conversation", stream_listen=f"127.0.0.1:{port}")
    if max_calls is not None:
        values.setdefault("sip", {}).update(max_calls=max_calls)
    values.setdefault("plivo", {}).update(nonce_db=":memory:")
    return _toml(values)


def heard_figures(heard_ulaw: bytes, spans: list[tuple[float, float]]) -> list[float | None]:
    """Per question: ms from its last voiced sample to the first voiced frame the caller heard
    after it (within the reply window), None if none."""
    from bridge.audio.g711 import ulaw_to_pcm

    frames = np.frombuffer(ulaw_to_pcm(heard_ulaw), dtype="<i2").reshape(-1, 160)
    loud = np.abs(frames.astype(np.int32)).max(axis=1) > VOICED if len(frames) else np.zeros(0, bool)
    voiced = np.flatnonzero(loud) * 0.02  # tick -> seconds from the call's first tick
    out: list[float | None] = []
    for _, end in spans:
        after = [t for t in voiced if end <= t < end + REPLY_WINDOW_S]
        out.append(round((after[0] - end) * 1000) if after else None)
    return out


def serve_callers(conn: Connection, url: str, first: int, calls: int, total: int, ramp_s: float,
                  audio: list[bytes], spans: list[list[tuple[float, float]]]) -> None:
    """Child process: calls ``first``.. of ``total`` by the lean callers, caller n playing
    ``audio[n % len(audio)]``; per call its end and the voice-to-voice it heard."""
    from bridge.callfacts import encode_headers, stream_token
    from bridge.simulator.plivo.stream_load import LeanCaller, LoadPool

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        numbers = list(range(first, first + calls))
        # the pool gives caller i clip i % len: order the clips so call n plays audio[n % len]
        pool = LoadPool([audio[n % len(audio)] for n in numbers[: len(audio)]], tail_s=TAIL_S)
        callers = [LeanCaller(url, f"conv-{n}", auth_token=AUTH_TOKEN, keep_heard=True,
                              extra_headers=encode_headers({"Token": stream_token(SECRET, f"conv-{n}", {})}))
                   for n in numbers]
        out = await pool.run(callers, [ramp_s * n / total for n in numbers])
        results = [{"error": r.error} if r.error else
                   {"close_code": r.close_code, "ended_by": r.ended_by, "bad_messages": r.bad_messages,
                    "v2v_ms": heard_figures(r.heard, spans[n % len(spans)])}
                   for n, r in zip(numbers, out, strict=True)]
        return results, {"cpu_s": pool.stats.cpu_s, "timer_late_p99_ms": pool.stats.late_p99_ms()}

    conn.send(asyncio.run(main()))


def run_once(args: argparse.Namespace, n_daemons: int, calls: int, fakes_url: str, questions: list[bytes],
             budget: Budget | None) -> dict[str, Any]:
    audio = caller_audio(questions, args.turns)
    spans = [question_spans(questions, args.turns, k) for k in range(len(audio))]
    port = free_port(socket.SOCK_STREAM)
    env = {"VOICE_BRIDGE_STREAM_SECRET": SECRET, "PLIVO_AUTH_TOKEN": AUTH_TOKEN,
           "DEEPGRAM_API_KEY": DEEPGRAM_KEY, "OPENAI_API_KEY": OPENAI_KEY,
           "ELEVENLABS_API_KEY": ELEVENLABS_KEY}
    url = f"ws://127.0.0.1:{port}/stream"
    call_s = max(len(a) for a in audio) / 16000 + TAIL_S
    load_before = os.getloadavg()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="vb-streamconv-") as tmp_s:
        groups: list[CpuGroup] = []
        with _daemons(Path(tmp_s), n_daemons, calls, agent="conversation",
                      config=daemon_config(fakes_url, args.tts, port, args.max_calls), env=env, budget=budget,
                      groups=groups) as daemons:
            parts = [n for n in split(calls, -(-calls // CALLS_PER_PROCESS)) if n]
            children, pipes, first = [], [], 0
            with Sampler(daemons, groups) as sampler:
                for n in parts:
                    parent, child = ctx.Pipe()
                    proc = ctx.Process(target=serve_callers, daemon=True,
                                       args=(child, url, first, n, calls, args.ramp_s, audio, spans))
                    proc.start()
                    children.append(proc)
                    pipes.append(parent)
                    first += n
                results: list[dict[str, Any]] = []
                stats: list[dict[str, Any]] = []
                for parent, proc in zip(pipes, children, strict=True):
                    if parent.poll(call_s + args.ramp_s + 120):
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
    window = (args.ramp_s + 2, call_s - 2)  # every call up
    cpu = sampler.cpu_pct(*window)
    rows = sampler.per_process(cpu, [_stream_calls(t) for t in texts])
    for row, pressure, lag in zip(rows, sampler.pressure(*window), lag_p99, strict=True):
        row.update(pressure, loop_lag_p99_ms=lag)
        if budget is not None:
            row["cpu_pct_of_budget"] = round(row["cpu_pct_of_core"] / budget.cores, 1)
    ok = [r for r in results if "error" not in r and r["ended_by"] == "caller" and not r["bad_messages"]]
    v2v = [v for r in ok for v in r["v2v_ms"] if v is not None]
    heard = len(v2v)
    daemon = daemon_figures(texts)
    quality = {"calls_failed": calls - len(ok), "replies_missing": calls * args.turns - heard,
               "wire_v2v_p95_ms": pct(v2v, 0.95), "memory": False}
    run = {"daemons": n_daemons, "calls": calls, "stream_url": "one (shared port)",
           "ok": len(ok), "failed": calls - len(ok),
           "errors": sorted({str(r.get("error") or r.get("close_code")) for r in results if r not in ok}),
           "kernel_spread": [_stream_calls(t) for t in texts],
           "replies_heard": heard, "replies_expected": calls * args.turns,
           "wire_v2v_ms": {"p50": pct(v2v, 0.5), "p95": quality["wire_v2v_p95_ms"], "max": pct(v2v, 1.0)},
           "daemons_v2v_ms": daemon["voice_to_voice_ms"], "daemons_replies": daemon["replies"],
           "callers_cpu_pct_per_stream": round(100 * sum(s["cpu_s"] for s in stats) / (calls * call_s), 3)
           if stats else None,
           "callers_timer_late_p99_ms": max((s["timer_late_p99_ms"] for s in stats), default=None),
           "per_process": rows, "quality": quality, "wire": True,
           "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}}
    return run


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_plan_arguments(ap, [1, 20])
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--tts", default="elevenlabs-ws",
                    choices=["elevenlabs-ws", "elevenlabs-multi", "elevenlabs"])
    ap.add_argument("--max-calls", type=int,
                    help="each daemon's sip.max_calls: at it a daemon steps out of the stream port's "
                         "group (the others take the new streams; the last one left answers 503)")
    ap.add_argument("--ramp-s", type=float, default=10.0, help="calls start spread over this long")
    ap.add_argument("--token-ms", type=float, default=20.0, help="LLM time per token after the first")
    ap.add_argument("--v2v-p95-ms", type=float,
                    help="capacity bound on the heard voice-to-voice p95 (default: 1.15x the 1-call run's)")
    cpu_budget.add_arguments(ap)
    return ap


def main() -> int:
    args = parser().parse_args()
    budget = cpu_budget.from_args(args)
    with tempfile.TemporaryDirectory() as tmp:
        questions = [speak(q, Path(tmp), f"q{i}") for i, q in enumerate(QUESTIONS)]
    with _fakes(args.token_ms) as (url, _pid):
        runs = [run_once(args, d, c, url, questions, budget) for d, c in plan(args)]
    print(json.dumps(report("stream_conversation_scaleout", "plivo stream, one URL", "streams_failed",
                            args, runs, budget), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
