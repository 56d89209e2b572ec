"""The full conversation pipeline on the Plivo stream path at N concurrent calls, for issue 13's
capacity target: the bridge's CPU, RSS per call, voice-to-voice and whether every reply came.

Three processes, so that only the bridge's own work is charged to the bridge: the provider
fakes (the REAL Deepgram/OpenAI/ElevenLabs SDK clients talk to them, with voice_to_voice.py's
latency profile: STT final 150-300 ms, LLM first token 350 ms, TTS first byte 120 ms), the
simulated Plivo callers (bridge/simulator/plivo_sim: signed-less dev streams, mu-law media at
real time, playAudio played out and checkpoints answered as Plivo does, no network delay), and
this process: the daemon's StreamServer with the conversation agent on one event loop, the
providers built once and shared by every call as in the daemon. Each caller waits for the
greeting, asks ``--turns`` questions (espeak-ng speech) with time for the answer between
them, then hangs up; calls start spread over ``--ramp-s``. As in the daemon, a LoadMonitor sheds
new streams (503 at the upgrade) while the loop's recent lag is over daemon.shed_loop_lag_ms:
refused streams are reported apart from replies lost on the streams the bridge took, with the
loop lag over time and the share of the run the loop thread waited for a CPU (a shared box).

Usage: .venv/bin/python bench/stream_capacity.py [--calls 1 60 150] [--turns 2] [--tts elevenlabs-ws]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from loop_probe import CallbackProfile, GcPauses, LagProbe  # noqa: E402
from voice_to_voice import (  # noqa: E402  (the same fakes, profile and figures)
    ANSWERS,
    QUESTIONS,
    Capture,
    add_shared_args,
    append_lines,
    close_providers,
    cloud_settings,
    cpu_seconds,
    fakes_lag,
    figures,
    flux_eager_threshold,
    gc_ab,
    gc_label,
    gc_settings,
    pct,
    rss_mib,
    sample_rss,
    serve_fakes,
    set_tts_spares,
    speak,
    stage_table,
    tts_sockets,
    turn_rows,
    warm_up,
)

from bridge import event_loop  # noqa: E402
from bridge.admission import Admission  # noqa: E402
from bridge.callmodel import CallInfo  # noqa: E402
from bridge.conversation import run_conversation  # noqa: E402
from bridge.conversation.fallback import presynthesize  # noqa: E402
from bridge.conversation.silero_shared import shared_silero  # noqa: E402
from bridge.daemon.gc_policy import settle_gc  # noqa: E402
from bridge.daemon.load import LoadMonitor  # noqa: E402
from bridge.leg import AudioLeg  # noqa: E402
from bridge.metrics import CALLS_REFUSED  # noqa: E402
from bridge.providers.factory import build_providers  # noqa: E402
from bridge.settings import Secrets, Settings  # noqa: E402
from bridge.stream.server import StreamServer  # noqa: E402
from bridge.supervisor import CallSupervisor  # noqa: E402
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the Deepgram SDK's websockets.legacy

GREETING_S = 3.0  # caller silence before the first question: the greeting plays out
ANSWER_S = 8.0  # silence after each question: the answer (~4.5 s of speech) plays out


# -- the callers, in their own process ------------------------------------------------------
def serve_callers(conn: Connection, url: str, calls: int, ramp_s: float, audio: list[bytes]) -> None:
    """Child process: ``calls`` simulated Plivo streams; sends back a summary per call."""
    from bridge.simulator.plivo.network import NetworkProfile
    from bridge.simulator.plivo.stream_client import PlivoStreamClient

    async def one(n: int) -> dict[str, Any]:
        # Real calls are answered at random instants, so their 20 ms media clocks have random
        # phases; the ramp's even steps (10 s / 150 = 66.7 ms) alone put every stream on one
        # of three phases, 50 streams' frames arriving within a millisecond or two
        await asyncio.sleep(ramp_s * n / calls + random.Random(n).uniform(0.0, 0.02))
        client = PlivoStreamClient(url, call_uuid=f"bench-{n}", network=NetworkProfile.none())
        try:
            result = await client.run(audio[n % len(audio)], tail_s=1.0, max_s=120.0)
        except Exception as exc:  # a refused or dropped stream is a result, not a crash
            status = getattr(getattr(exc, "response", None), "status_code", None)
            return {"error": type(exc).__name__, "status": status}
        if result.close_code == 1013:  # taken at the upgrade, then "busy" (filled up meanwhile)
            return {"error": "busy", "status": 1013}
        return {"ended_by": result.ended_by, "agent_audio_ms": result.agent_audio_ms,
                "clears": result.clears}

    async def main() -> tuple[list[dict[str, Any]], tuple[list[float], list[float]]]:
        probe = LagProbe()  # the callers' own loop: late callers send late frames
        probe.start()
        results = list(await asyncio.gather(*(one(n) for n in range(calls))))
        probe.stop()
        return results, (probe.times, probe.lags)

    conn.send(asyncio.run(main()))


def caller_audio(questions: list[bytes], turns: int) -> list[bytes]:
    """Per caller shape: greeting wait, then question + room for the answer, ``turns`` times."""
    silence = lambda s: bytes(int(16000 * s) & ~1)  # noqa: E731
    return [silence(GREETING_S) + b"".join(questions[(k + i) % len(questions)] + silence(ANSWER_S)
                                           for i in range(turns))
            for k in range(len(questions))]


# -- the bridge, here ------------------------------------------------------------------------
async def scenario(calls: int, settings: Settings, secrets: Secrets, audio: list[bytes],
                   turns: int, ramp_s: float, turns_out: str | None = None,
                   fakes: Any = None, profile: CallbackProfile | None = None,
                   gc_freeze: bool = True, tts_spares: int | None = None,
                   gc_threshold: tuple[int, int, int] | None = None) -> dict[str, Any]:
    providers = build_providers(settings, secrets)
    set_tts_spares(providers, tts_spares)
    # the daemon's monitor has run long before a call comes; here it starts before the warm-up
    # and has a full window (one second of probes) before the first caller knocks
    load = LoadMonitor(settings.daemon.shed_loop_lag_ms, settings.daemon.shed_cpu_percent)
    load.start()
    monitor_since = time.monotonic()
    captures: list[Capture] = []
    call_of: dict[int, int] = {}
    try:
        await warm_up(providers)
        fallback = await presynthesize(providers.tts, settings.conversation.fallback_text)

        async def converse(leg: AudioLeg, info: CallInfo) -> None:
            capture = Capture()
            call_of[id(capture)] = int(info.call_id.rsplit("-", 1)[-1])  # "bench-N" (--turns-out)
            captures.append(capture)
            await run_conversation(leg, providers, settings, transcript=capture, call_info=info,
                                   fallback_audio=fallback)

        # as the daemon wires it: one supervisor (capacity, drain, end of call) for the server,
        # and the load monitor that sheds new streams (503) while the loop runs late
        admission = Admission(settings.sip.max_calls)
        admission.overloaded = load.overloaded
        supervisor = CallSupervisor(converse, admission)
        server = StreamServer(settings, Secrets(), supervisor)
        await server.start()
        shed_before = _shed_count()
        await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - monitor_since)))
        silero = shared_silero()
        runs, windows = silero.runs, silero.windows
        batch = silero.batch()
        batch.largest = 0  # this scenario's (the batch lives as long as the loop)
        if hasattr(batch, "most_queued"):  # a tree with silero slices
            batch.most_queued = 0
        rss_before = rss_mib()
        rss_seen = [rss_before]
        fakes_lag(fakes)  # drop the fakes' samples of before this scenario
        sockets_before = tts_sockets(providers)
        probe = LagProbe()
        probe.start()
        if profile is not None:
            profile.install()
        threshold_before = gc.get_threshold()
        if gc_freeze:
            # the daemon's GC policy once its providers are up (daemon/gc_policy.py): what lives
            # as long as the process stays out of the cyclic GC's scans, which otherwise walk
            # the SDKs' and models' objects in the middle of calls
            settle_gc()
        if gc_threshold:
            gc.set_threshold(*gc_threshold)
        gc_pauses = GcPauses()
        gc_pauses.install()
        sampler = asyncio.create_task(sample_rss(rss_seen))
        cpu, wall = time.process_time(), time.monotonic()
        queued = runqueue_wait_s()
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        url = f"ws://127.0.0.1:{server.bound_port}/stream"
        callers = ctx.Process(target=serve_callers, args=(child, url, calls, ramp_s, audio), daemon=True)
        loop = asyncio.get_running_loop()
        # in a thread: spawn writes the pickled audio (MBs) into a pipe the child reads only
        # once its interpreter is up, which blocked this loop 1-2 s (and shed the first calls)
        await loop.run_in_executor(None, callers.start)
        assert callers.pid is not None
        try:
            results, callers_samples = await loop.run_in_executor(None, parent.recv)
            busy = (time.process_time() - cpu) / max(1e-9, time.monotonic() - wall)
            waited = runqueue_wait_s() - queued
            queued_share = round(waited / max(1e-9, time.monotonic() - wall), 3) if waited >= 0 else None
            callers_busy = cpu_seconds(callers.pid) / max(1e-9, time.monotonic() - wall)
        finally:
            probe.stop()
            if profile is not None:
                profile.uninstall()
            gc_pauses.uninstall()
            gc.unfreeze()
            gc.set_threshold(*threshold_before)
            sampler.cancel()
            await server.stop(drain_timeout_s=10.0)
            await loop.run_in_executor(None, callers.join, 10)
        runs, windows = silero.runs - runs, silero.windows - windows
        sockets = [a - b for a, b in zip(tts_sockets(providers), sockets_before, strict=True)]
    finally:
        await load.stop()
        await close_providers(providers)
    latency = [m for c in captures for m in c.latency]
    lag = probe.lags
    fakes_probe = fakes_lag(fakes)
    callers_probe = LagProbe()
    callers_probe.times, callers_probe.lags = callers_samples
    if turns_out is not None:  # one line per turn: which call, which question, its marks
        rows = iter(turn_rows(captures, probe, fakes_probe))
        append_lines(turns_out, [{"calls": calls, "call": call_of[id(c)], "turn": i,
                                  "question": (call_of[id(c)] + i) % len(QUESTIONS), **next(rows)}
                                 for c in captures for i, _ in enumerate(c.latency)])
    final_timeout_ms = 1000 * settings.conversation.stt_final_timeout_s
    served = sum(1 for c in captures if len(c.latency) >= turns and not c.failures)
    refused = [r for r in results if r.get("status") in (503, 1013)]
    asked = len(captures) * turns  # the questions of the streams the bridge took
    return {
        "calls": calls,
        "streams_served": len(captures),
        # shed or at capacity: refused at the upgrade (503) or right after start (1013 busy);
        # a new caller refused is what load shedding is for, unlike a live call's lost reply
        "streams_refused": len(refused),
        "shed_refusals": _shed_count() - shed_before,
        "caller_errors": sum(1 for r in results if "error" in r) - len(refused),
        "calls_with_every_reply": served,
        "replies_delivered": f"{len(latency)} of {asked} questions on the streams served",
        "replies_lost": asked - len(latency),
        "voice_to_voice_ms": figures(latency, "voice_to_voice"),
        # turns whose final transcript came only by the engine's stt_final_timeout_s: a
        # Finalize left unanswered (the same at 1 call as at 150), or a loop starved of CPU
        "stt_final_timeouts": sum(1 for m in latency if m.get("stt_final", 0.0) >= final_timeout_ms),
        "stt_final_ms": figures(latency, "stt_final"),
        "llm_first_token_ms": figures(latency, "llm_first_token"),
        "tts_first_byte_ms": figures(latency, "tts_first_byte"),
        "calls_with_provider_failure": sum(1 for c in captures if c.failures),
        "provider_failures": sorted({f for c in captures for f in c.failures})[:5],
        "barge_ins_heard_by_callers": sum(int(r.get("clears", 0)) for r in results),
        "loop_lag_ms": {"p50": pct(lag, 0.5), "p95": pct(lag, 0.95), "max": pct(lag, 1.0)},
        # each turn split into stages, with the worst loop lag of the bridge and of the fakes
        # while it ran (bench/profiles/latency_150.md)
        "stages": stage_table(captures, probe, fakes_probe),
        "fakes_loop_lag_ms": fakes_probe.summary(),
        # TTS replies that had to open their socket on the turn's path (no spare left)
        "tts_socket_misses": f"{sockets[1]} of {sockets[0]} replies",
        # the bridge process's garbage-collector passes during the calls, per generation
        "gc_pauses": gc_pauses.report(),
        "callers_loop_lag_ms": callers_probe.summary(),
        # the same samples weighted by the time each one covers: the lag a message arriving at
        # a random moment meets (one 2 s stall is one sample above, but 2 s of the run here)
        "loop_lag_ms_time_weighted": {"p50": time_weighted(lag, 0.5), "p95": time_weighted(lag, 0.95)},
        # share of the run the loop thread was ready to run but waited for a CPU (schedstat):
        # high on a shared box, where the loop lag is then the machine's, not the bridge's
        "loop_thread_runqueue_wait_share": queued_share,
        "cpu_cores_busy": round(busy, 3),
        "callers_cores_busy": round(callers_busy, 3),
        "rss_mib": {"before_calls": round(rss_before, 1), "peak": round(max(rss_seen), 1),
                    "per_call": round((max(rss_seen) - rss_before) / calls, 3)},
        "silero": {"windows": windows, "runs": runs,
                   "windows_per_run": round(windows / runs, 2) if runs else None,
                   # the most windows one run carried, and one pass queued (sliced above 47)
                   "largest_run": batch.largest, "most_queued": getattr(batch, "most_queued", None)},
    }


def runqueue_wait_s() -> float:
    """Seconds this process's main (loop) thread has waited on a run queue; -1 off Linux."""
    try:
        with open(f"/proc/{os.getpid()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return -1.0


def time_weighted(lag_ms: list[float], q: float, period_ms: float = 10.0) -> float | None:
    """The q-quantile of the loop lag over time: each sample weighs the period plus its lag."""
    if not lag_ms:
        return None
    ordered = sorted(lag_ms)
    total = sum(period_ms + v for v in ordered)
    acc = 0.0
    for v in ordered:
        acc += period_ms + v
        if acc >= q * total:
            return round(v, 1)
    return round(ordered[-1], 1)


def _shed_count() -> float:
    """Streams refused with 503 because the loop ran late, so far (the daemon's metric)."""
    return sum(s.value for m in CALLS_REFUSED.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels.get("reason") == "overloaded"
               and s.labels.get("transport") == "stream")


async def run(args: argparse.Namespace, url: str, audio: list[bytes], fakes_pid: int,
              fakes: Any = None) -> dict[str, Any]:
    secrets = Secrets.from_env(
        {"DEEPGRAM_API_KEY": DEEPGRAM_KEY, "OPENAI_API_KEY": OPENAI_KEY, "ELEVENLABS_API_KEY": ELEVENLABS_KEY}
    )
    base = cloud_settings(url, args.tts, stt=args.stt, flux_eager=flux_eager_threshold(args))
    settings = Settings.model_validate({
        **base.model_dump(),
        "daemon": {"stream_listen": "127.0.0.1:0", "shed_cpu_percent": args.shed_cpu_percent},
        # development streams (no token, no signature): the bench measures the media path
        "plivo": {"stream_require_token": False, "stream_check_signature": False, "nonce_db": ":memory:"},
    })
    out: dict[str, Any] = {}
    settings_ab = gc_settings(args)
    for calls in args.calls:
        for setting in settings_ab:  # several: back to back, same call count
            cpu, wall = cpu_seconds(fakes_pid), time.monotonic()
            ramp = args.ramp_s if calls > 1 else 0.0
            profile = CallbackProfile() if calls in args.callback_profile else None
            result = await scenario(calls, settings, secrets, audio, args.turns, ramp, args.turns_out,
                                    fakes, profile, args.gc_freeze == "on", args.tts_spares, setting)
            if profile is not None:
                result["callback_profile"] = profile.report()
            result["fakes_cores_busy"] = round((cpu_seconds(fakes_pid) - cpu) / (time.monotonic() - wall), 3)
            result["load_average"] = os.getloadavg()  # the machine's, at the end of the run
            result["gc_threshold"] = gc_label(setting)
            out[str(calls) if len(settings_ab) == 1 else f"{calls}/gc={gc_label(setting)}"] = result
    if len(settings_ab) > 1:
        out["gc_ab"] = gc_ab(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_shared_args(parser)
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 60, 150])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--tts", default="elevenlabs-ws",
                        choices=["elevenlabs-ws", "elevenlabs-multi", "elevenlabs"])
    parser.add_argument("--stt", default="deepgram", choices=["deepgram", "deepgram-flux"],
                        help="Deepgram v1 (the default) or Flux, against the same fakes process")
    parser.add_argument("--ramp-s", type=float, default=10.0)
    parser.add_argument("--token-ms", type=float, default=20.0)
    parser.add_argument("--shed-cpu-percent", type=float, default=0.0,
                        help="daemon.shed_cpu_percent for the run (0: shed on loop lag only, the default)")
    parser.add_argument("--turns-out", default=None,
                        help="append one JSON line per turn (call, question, latency marks) to this file")
    parser.add_argument("--loop", choices=event_loop.LOOP_NAMES, default=event_loop.DEFAULT_LOOP,
                        help="the measured (bridge) process's event loop; callers and fakes: asyncio")
    parser.add_argument("--callback-profile", type=int, nargs="*", default=[],
                        help="at these call counts, time every callback of the bridge's loop (thread CPU "
                             "and wall time; adds ~1 us each) and print the longest (loop_probe.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        questions = [speak(q, Path(tmp), f"q{i}") for i, q in enumerate(QUESTIONS)]
    audio = caller_audio(questions, args.turns)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    answer = ANSWERS["short_first_clause"]
    fake_args = (child, args.token_ms / 1000, answer, (150, 300))
    fakes = ctx.Process(target=serve_fakes, args=fake_args, daemon=True)
    fakes.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the fakes did not start")
        assert fakes.pid is not None
        results = event_loop.run(run(args, parent.recv(), audio, fakes.pid, parent), args.loop)
    finally:
        parent.close()
        fakes.join(10)
        if fakes.is_alive():
            fakes.terminate()
    print(json.dumps({"path": "plivo stream", "event_loop": args.loop, "stt": args.stt, "tts": args.tts,
                      "turns": args.turns, "answer": answer,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
