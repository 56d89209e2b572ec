"""Voice-to-voice latency on the cloud providers: the REAL Deepgram, OpenAI and ElevenLabs SDK
clients against the local fakes set to a realistic latency profile, at 1 and 100 concurrent
calls.

Profile (issue 4, issue 15): the fake Deepgram sends a final 150-300 ms (its default processing
delay, drawn per final) after it sees the end of speech (its own endpointing) or after a
Finalize, with the empty speech_finals and unanswered Finalize the real service has; the
LLM's first token comes 350 ms after the request, then a token every ``--token-ms``; the
TTS's first audio 120 ms after the request (HTTP stream) or after the first text
(stream-input WebSocket). Targets (issue 12): p50 voice_to_voice <= 600 ms (p95 <= 750) at 1
call and <= 650 ms at 100 calls, next to the serial sum of the same chain (endpointing + STT
final + LLM first clause + TTS first byte).

The fakes run in a child process (they stand for remote services: their CPU must not be
charged to the bridge's event loop). The bridge side is the conversation engine on in-memory
legs paced in real time (20 ms ticks, like the RTP leg), with the real VAD on espeak-ng
caller speech, the providers built once and shared by all calls as in the daemon. Calls
arrive spread over ``--ramp-s``. Two answer shapes are measured, since the first clause must
be complete before it goes to the TTS.

With ``--stt deepgram-flux`` the STT is Deepgram Flux (listen v2: the bridge's own socket,
with the SDK's request, against the fake /v2/listen): no endpointing window and no final
delay; the fake sends EagerEndOfTurn
``--flux-eager-ms`` and EndOfTurn ``--flux-eot-ms`` after the end of speech (defaults 150 and
300: Flux's published median end-of-turn latency is under 300 ms, eager mode saves about
150 ms), and the engine starts the held reply on EagerEndOfTurn. ``--stt deepgram
deepgram-flux`` measures both in one run.

Caller audio goes to the STT in chunks of ``--send-chunk-ms`` (``stt.send_chunk_ms``, 80 by
default; 20 sends every frame, as before that setting).

Per scenario: voice_to_voice = first_audio_out - user_speech_end (DESIGN.md latency marks),
each provider mark from user_speech_end, the bridge overhead, the event loop's lag, CPU.

Usage: .venv/bin/python bench/voice_to_voice.py [--calls 1 100] [--turns 3] [--stt deepgram deepgram-flux]
       [--tts elevenlabs-ws elevenlabs-multi elevenlabs] [--answers short_first_clause long_first_clause]
       [--first-clause-words N] [--preemptive on|off] [--adaptive on|off] [--on-interim on|off]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bridge import event_loop
from bridge.audio.wavfile import read_wav_8k_mono
from bridge.callmodel import CallInfo
from bridge.conversation import run_conversation
from bridge.conversation.clauses import ClauseSplitter
from bridge.conversation.fallback import presynthesize
from bridge.conversation.silero_shared import shared_silero
from bridge.conversation.transcript import TranscriptWriter
from bridge.daemon.gc_policy import settle_gc
from bridge.providers.factory import ProviderSet, build_providers
from bridge.settings import Secrets, Settings
from devkit.fakes.deepgram import DEFAULT_FINAL_DELAY_S
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY
from devkit.memory_leg import MemoryLeg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop_probe import CallbackProfile, GcPauses, LagProbe, gc_census

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the Deepgram SDK's websockets.legacy

QUESTIONS = ["Where are you located?", "Are you open on Saturday?", "I would like to make an appointment."]
# The first clause goes to the TTS once complete (the engine's clause splitter), so its length
# is part of the LLM wait: both shapes a voice LLM produces are measured.
ANSWERS = {
    "short_first_clause": "Sure! We are open from nine to six on weekdays. Is there anything else?",
    "long_first_clause": "We are open from nine to six on weekdays. Is there anything else?",
}
PROFILE: dict[str, float | tuple[float, float]] = {
    "stt_final_s": DEFAULT_FINAL_DELAY_S,  # a range: the fake draws each final's delay from it
    "llm_first_token_s": 0.350,
    "tts_first_byte_s": 0.120,
}


# -- the fakes, in their own process --------------------------------------------------------------
def serve_fakes(conn: Connection, token_s: float, answer: str, flux_ms: tuple[int, int],
                dg_interims: tuple[int, bool] = (1000, False)) -> None:
    """Child process: FakeCloud with the latency profile until the parent closes the pipe."""
    from devkit.fakes import FakeCloud

    async def main() -> None:
        probe = LagProbe()  # the fakes' own loop: a late fake is the bench's delay, not the bridge's
        probe.start()
        async with FakeCloud() as cloud:
            cloud.deepgram.final_delay_s = PROFILE["stt_final_s"]
            cloud.flux.eager_eot_after_ms, cloud.flux.eot_after_ms = flux_ms
            cloud.deepgram.interim_every_ms, cloud.deepgram.interim_on_silence = dg_interims
            # chunk 0 carries only the role; the first token follows one token time later
            cloud.openai.faults.first_byte_delay_s = max(0.0, _seconds("llm_first_token_s") - token_s)
            cloud.openai.faults.chunk_delay_s = token_s
            cloud.elevenlabs.faults.first_byte_delay_s = _seconds("tts_first_byte_s")
            cloud.elevenlabs.ws_faults.first_byte_delay_s = _seconds("tts_first_byte_s")
            replies = cloud.openai.script
            heard, flux_heard = cloud.deepgram.script, cloud.flux.script
            loop = asyncio.get_running_loop()

            def keep_scripted() -> None:
                # every request gets the same answer (the queue would run dry otherwise); the
                # STT "recognises" the questions as Deepgram does with punctuate/smart_format
                # on (the bridge asks for both), so the end-of-turn rules see real sentences
                while len(replies) < 1000:
                    replies.append(answer)
                while len(heard) < 1000:
                    heard.extend(QUESTIONS)
                while len(flux_heard) < 1000:
                    flux_heard.extend(QUESTIONS)
                loop.call_later(0.5, keep_scripted)

            keep_scripted()
            conn.send(cloud.http_url)
            await loop.run_in_executor(None, _serve_stats, conn, probe)

    asyncio.run(main())


def _serve_stats(conn: Connection, probe: LagProbe) -> None:
    """In a thread of the fakes' process until the parent closes the pipe: each request gets
    the loop-lag samples (wake-up times, ms late) since the last one."""
    while True:
        try:
            conn.recv()
        except EOFError:
            return
        times, lags = probe.times, probe.lags
        probe.reset()  # the loop appends to the new lists from now on
        conn.send((times, lags))


def fakes_lag(conn: Connection | None) -> LagProbe:
    """The fakes' loop-lag samples since the last call (an empty probe without a pipe)."""
    probe = LagProbe()
    if conn is not None:
        conn.send("stats")
        probe.times, probe.lags = conn.recv()
    return probe


def _seconds(key: str) -> float:
    value = PROFILE[key]
    assert isinstance(value, float)
    return value


def _ms(value: float | tuple[float, float]) -> float | list[float]:
    return [round(v * 1000) for v in value] if isinstance(value, tuple) else value * 1000


# -- the bridge side ---------------------------------------------------------------------------
class Capture(TranscriptWriter):
    """Keeps each turn's latency marks instead of writing a file."""

    def __init__(self) -> None:
        super().__init__(None)
        self.latency: list[dict[str, float]] = []
        # loop time of each latency record (the engine writes it at first_audio_out): puts the
        # turn's marks on the clock, to match them with the loop lag of the bench's processes
        self.latency_at: list[float] = []
        self.failures: list[str] = []
        self.end_reason = ""
        self.replies = 0  # agent utterances finished (heard in full or cut)
        self.underruns: list[float] = []
        self.stalled = False  # a turn got no reply within the bench's limit (counted, not fatal)
        self.seconds = 0.0  # how long the call was up
        self._waiter: asyncio.Future[None] | None = None

    async def changed(self, timeout_s: float) -> None:
        """Until the next record is written, or ``timeout_s``. The bench's waits sleep on
        this instead of polling every 10 ms: 100 calls polling were 10 000 timer wake-ups a
        second in the measured process, charged to the bridge."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout_s, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def write(self, event: str, **data: Any) -> None:
        if self._waiter is not None:
            _wake(self._waiter)
        if event == "latency":
            self.latency.append(data)
            self.latency_at.append(time.monotonic())
        elif event == "agent":
            self.replies += 1
        elif event == "call_end":
            self.end_reason = str(data.get("reason", ""))
        elif event == "provider_failure":
            self.failures.append(f"{data.get('kind')}/{data.get('provider')}: {data.get('reason')}")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def speak(text: str, folder: Path, name: str) -> bytes:
    path = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+klatt", "-s", "165", "-w", str(path), text],
                   check=True, capture_output=True, timeout=30)
    return read_wav_8k_mono(path)


async def one_call(n: int, start_at: float, providers: ProviderSet, settings: Settings,
                   questions: list[bytes], fallback: bytes, turns: int) -> Capture:
    await asyncio.sleep(max(0.0, start_at))  # calls arrive over the ramp, not all in one tick
    leg = MemoryLeg(f"v2v-{n}", keep_agent_audio=False)  # underruns() needs times only
    capture = Capture()
    began = time.monotonic()
    info = CallInfo(leg.call_id, "sip:caller@bench", "sip:agent@bench", ("127.0.0.1", 5060))
    task = asyncio.create_task(run_conversation(
        leg, providers, settings, transcript=capture, call_info=info, fallback_audio=fallback,
    ))
    leg.start_realtime()
    over = lambda: leg.ended or bool(capture.failures)  # noqa: E731
    try:
        try:
            # The engine records each reply once the caller has heard all of it (an empty leg
            # queue is not enough: the next clause's audio may still be on its way).
            await _wait(lambda: over() or capture.replies >= 1, 20, capture)  # the greeting
            for i in range(turns):
                if over():
                    break
                await asyncio.sleep(0.3 + (n % 7) / 10)  # callers do not all talk at once
                before, heard = len(capture.latency), capture.replies
                leg.say(questions[(n + i) % len(questions)])
                await _wait(lambda b=before: over() or len(capture.latency) > b, 30, capture)
                await _wait(lambda h=heard: over() or capture.replies > h, 30, capture)
        except TimeoutError:
            capture.stalled = True  # a reply that never came is counted; the other calls go on
        await leg.remote_hangup("bye")
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            capture.stalled = True
    finally:
        await leg.aclose()
    capture.seconds = time.monotonic() - began
    capture.underruns = underruns(leg)
    return capture


def underruns(leg: MemoryLeg) -> list[float]:
    """Silences inside the agent's utterances (ms): the next audio was not there in time."""
    gaps: list[float] = []
    last: dict[str, float] = {}
    for frame in leg.sent:
        prev = last.get(frame.utterance_id)
        if prev is not None and frame.t - prev > 0.03:
            gaps.append((frame.t - prev) * 1000 - 20)
        last[frame.utterance_id] = frame.t
    return gaps


async def _wait(cond: Any, limit_s: float, capture: Capture) -> None:
    """Until ``cond()``: re-checked at each record the call writes, and every 250 ms for what
    no record marks (the leg's end after our hang-up comes a task later than its record)."""
    end = time.monotonic() + limit_s
    while not cond():
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("bench call stalled")
        await capture.changed(min(left, 0.25))


async def loop_lag(samples: list[float], period_s: float = 0.01) -> None:
    """How late the event loop wakes a 10 ms sleeper: the queueing every call's work sees."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        samples.append((loop.time() - due) * 1000)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_rss(seen: list[float], period_s: float = 0.5) -> None:
    while True:
        await asyncio.sleep(period_s)
        seen.append(rss_mib())


def spans(latency: list[dict[str, float]], start: str, end: str) -> list[dict[str, float]]:
    """Each turn's ``end - start`` (both marks present) as {"span": ms}."""
    return [{"span": round(m[end] - m[start], 1)} for m in latency if start in m and end in m]


# A turn's stages, as spans between its marks (ms after user_speech_end): the endpointing
# window and STT final (user_speech_end -> turn_end), the bridge starting the LLM after the
# turn ended (turn_end -> llm_start; negative when preempted), the LLM's wait for its first
# token, the rest of the first clause, the TTS's first byte, and the first byte's way out.
STAGES = {
    "endpoint_and_final": ("", "turn_end"),
    "to_llm_start": ("turn_end", "llm_start"),
    "llm_first_token": ("llm_start", "llm_first_token"),
    "first_clause": ("llm_first_token", "first_clause"),
    "tts_first_byte": ("first_clause", "tts_first_byte"),
    "to_first_audio_out": ("tts_first_byte", "first_audio_out"),
}


def turn_rows(captures: list[Capture], bridge: LagProbe, fakes: LagProbe) -> list[dict[str, float]]:
    """Per turn: its marks, each stage's span (``stage_<stage>``) and, per stage, the worst
    loop lag the bridge and the fakes had while it ran (``lag_bridge_<stage>``,
    ``lag_fakes_<stage>``)."""
    rows: list[dict[str, float]] = []
    for capture in captures:
        for marks, at in zip(capture.latency, capture.latency_at, strict=True):
            v2v = marks.get("voice_to_voice")
            row = dict(marks)
            if v2v is None:
                rows.append(row)
                continue
            speech_end = at - v2v / 1000  # the record is written at first_audio_out
            for stage, (start, end) in STAGES.items():
                a = marks.get(start, 0.0) if start else 0.0
                b = marks.get(end)
                if b is None or (start and start not in marks):
                    continue
                row[f"stage_{stage}"] = round(b - a, 1)  # (the marks keep their own names)
                t0, t1 = speech_end + min(a, b) / 1000, speech_end + max(a, b) / 1000
                row[f"lag_bridge_{stage}"] = round(bridge.worst_between(t0, t1), 1)
                if fakes.times:
                    row[f"lag_fakes_{stage}"] = round(fakes.worst_between(t0, t1), 1)
            row["lag_bridge_turn"] = round(bridge.worst_between(speech_end, at), 1)
            if fakes.times:
                row["lag_fakes_turn"] = round(fakes.worst_between(speech_end, at), 1)
            rows.append(row)
    return rows


def stage_table(captures: list[Capture], bridge: LagProbe, fakes: LagProbe) -> dict[str, Any]:
    rows = turn_rows(captures, bridge, fakes)
    out: dict[str, Any] = {}
    for stage in (*STAGES, "turn"):
        entry: dict[str, Any] = {}
        if stage != "turn":
            entry["span_ms"] = _p50_p95([r[f"stage_{stage}"] for r in rows if f"stage_{stage}" in r])
        for who in ("bridge", "fakes"):
            values = [r[f"lag_{who}_{stage}"] for r in rows if f"lag_{who}_{stage}" in r]
            if values:
                entry[f"worst_lag_{who}_ms"] = _p50_p95(values)
        out[stage] = entry
    return out


def append_lines(path: str, rows: list[dict[str, Any]]) -> None:
    """One JSON line per row (a few hundred lines at the end of a scenario)."""
    with open(path, "a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def _p50_p95(values: list[float]) -> dict[str, float | None]:
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95)}


def figures(latency: list[dict[str, float]], key: str) -> dict[str, float | None]:
    values = [m[key] for m in latency if key in m]
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "max": pct(values, 1.0)}


def set_tts_spares(providers: ProviderSet, spares: int | None) -> None:
    """--tts-spares: the spare TTS sockets a provider may keep (1: one, as before 2026-12-02)."""
    for tts in providers.tts:
        if spares is not None and hasattr(tts, "max_spares"):
            tts.max_spares = spares


def tts_sockets(providers: ProviderSet) -> tuple[int, int]:
    """(replies started, of them replies that found no spare TTS socket and opened one while
    the caller waited), summed over the TTS providers that keep spares (elevenlabs-ws) or
    shared sockets (elevenlabs-multi: replies that found no free context slot)."""
    return (sum(int(getattr(t, "takes", 0)) for t in providers.tts),
            sum(int(getattr(t, "misses", 0)) for t in providers.tts))


async def warm_up(providers: ProviderSet) -> None:
    """Open the TTS connections before the first call, as the daemon does."""
    for tts in providers.tts:
        warmup = getattr(tts, "warmup", None)
        if warmup is not None:
            await warmup()


async def close_providers(providers: ProviderSet) -> None:
    for kind in (providers.stt, providers.llm, providers.tts):
        for p in kind:
            aclose = getattr(p, "aclose", None)
            if aclose is not None:
                await aclose()


async def scenario(calls: int, settings: Settings, secrets: Secrets, questions: list[bytes],
                   turns: int, ramp_s: float, fakes: Connection | None = None,
                   profile: CallbackProfile | None = None, turns_out: str | None = None,
                   label: str = "", gc_freeze: bool = True, census: bool = False,
                   gc_threshold: tuple[int, int, int] | None = None,
                   tts_spares: int | None = None) -> dict[str, Any]:
    providers = build_providers(settings, secrets)
    set_tts_spares(providers, tts_spares)
    try:
        await warm_up(providers)
        fallback = await presynthesize(providers.tts, settings.conversation.fallback_text)
        silero = shared_silero()
        runs, windows = silero.runs, silero.windows
        batch = silero.batch()
        batch.largest = 0  # this scenario's (the batch lives as long as the loop)
        if hasattr(batch, "most_queued"):  # a tree with silero slices
            batch.most_queued = 0
        fakes_lag(fakes)  # drop the fakes' samples of before this scenario
        sockets_before = tts_sockets(providers)
        threshold_before = gc.get_threshold()
        cpu, wall = time.process_time(), time.monotonic()
        probe = LagProbe()
        probe.start()
        if profile is not None:
            profile.install()
        if gc_freeze:
            # the daemon's GC policy once its providers are up (daemon/gc_policy.py): what lives
            # as long as the process stays out of the cyclic GC's scans, which otherwise walk
            # the SDKs' and models' objects in the middle of calls
            settle_gc()
        if gc_threshold:
            gc.set_threshold(*gc_threshold)
        gc_pauses = GcPauses()
        gc_pauses.install()
        rss_before = rss_mib()
        rss_seen = [rss_before]
        rss_sampler = asyncio.create_task(sample_rss(rss_seen))
        counted: dict[str, Any] = {}
        if census:  # once every call is up: what the GC walks, by type
            asyncio.get_running_loop().call_later(ramp_s + 2.0, lambda: counted.update(gc_census()))
        try:
            captures = await asyncio.gather(*(
                one_call(n, ramp_s * n / calls, providers, settings, questions, fallback, turns)
                for n in range(calls)
            ))
        finally:
            probe.stop()
            if profile is not None:
                profile.uninstall()
            gc_pauses.uninstall()
            gc.unfreeze()
            gc.set_threshold(*threshold_before)
            rss_sampler.cancel()
        cpu = time.process_time() - cpu
        fakes_probe = fakes_lag(fakes)
        sockets = [a - b for a, b in zip(tts_sockets(providers), sockets_before, strict=True)]
        busy = cpu / max(1e-9, time.monotonic() - wall)
        runs, windows = silero.runs - runs, silero.windows - windows
    finally:
        await close_providers(providers)
    latency = [m for c in captures for m in c.latency]
    failures = [f for c in captures for f in c.failures]
    lag = probe.lags
    if turns_out is not None:
        append_lines(turns_out, [{"scenario": label, "calls": calls, **row}
                                 for row in turn_rows(captures, probe, fakes_probe)])
    v2v = figures(latency, "voice_to_voice")
    target = 600 if calls == 1 else 650  # issue 12
    return {
        "calls": calls,
        "turns": len(latency),
        "voice_to_voice_ms": v2v,
        "target_p50_ms": target,
        "meets_target": v2v["p50"] is not None and v2v["p50"] <= target,
        "turns_preempted": sum(1 for m in latency if m.get("preempted")),
        # each mark measured from user_speech_end, as the engine records them
        "stt_final_ms": figures(latency, "stt_final"),
        "llm_first_token_ms": figures(latency, "llm_first_token"),
        # the first clause complete and handed to the TTS (the clause splitter's wait on tokens)
        "first_clause_ms": figures(latency, "first_clause"),
        # per turn: first token -> first clause (tokens the splitter waited for), first clause
        # -> TTS first byte (the TTS's wait): where a longer opening loses its time under load
        "clause_wait_ms": figures(spans(latency, "llm_first_token", "first_clause"), "span"),
        "tts_wait_ms": figures(spans(latency, "first_clause", "tts_first_byte"), "span"),
        "tts_first_byte_ms": figures(latency, "tts_first_byte"),
        "bridge_overhead_ms": figures(latency, "bridge_overhead"),
        "calls_with_provider_failure": sum(1 for c in captures if c.failures),
        # a call counts as served when every question got its reply (issue 13: every reply delivered)
        "calls_stalled": sum(1 for c in captures if c.stalled),
        "replies_delivered": f"{sum(len(c.latency) for c in captures)} of {calls * turns} questions",
        "call_ends": dict(Counter(c.end_reason for c in captures)),
        # audible gaps inside replies (TTS audio late for its slot): count and longest
        "playback_underruns": {
            "count": sum(len(c.underruns) for c in captures),
            "max_ms": round(max((g for c in captures for g in c.underruns), default=0.0), 1),
        },
        "provider_failures": sorted(set(failures))[:5],
        "loop_lag_ms": {"p50": pct(lag, 0.5), "p95": pct(lag, 0.95), "max": pct(lag, 1.0)},
        # each turn split into stages, with the worst loop lag of the bridge and of the fakes
        # while it ran (bench/profiles/latency_150.md)
        "stages": stage_table(captures, probe, fakes_probe),
        "fakes_loop_lag_ms": fakes_probe.summary(),
        # TTS replies that had to open their socket on the turn's path (no spare left)
        "tts_socket_misses": f"{sockets[1]} of {sockets[0]} replies",
        # the bridge process's garbage-collector passes during the calls, per generation
        "gc_pauses": gc_pauses.report(),
        **({"gc_census": counted} if counted else {}),
        "cpu_cores_busy": round(busy, 3),
        # the process's CPU per second of call (all calls' durations summed): the cost of a
        # call, less sensitive than cores busy to how much of the CPU a shared box gave us
        "cpu_ms_per_call_second": round(cpu * 1000 / max(1e-9, sum(c.seconds for c in captures)), 2),
        # silero's confirming windows and the batched runs that carried them (silero_shared.py)
        "silero": {"windows": windows, "runs": runs,
                   "windows_per_run": round(windows / runs, 2) if runs else None,
                   # the most windows one run carried, and one pass queued (sliced above 47)
                   "largest_run": batch.largest, "most_queued": getattr(batch, "most_queued", None)},
        # the process's RSS once providers are up, its peak during the calls, and the growth
        # per call (all calls are up at once after the ramp)
        "rss_mib": {"before_calls": round(rss_before, 1), "peak": round(max(rss_seen), 1),
                    "per_call": round((max(rss_seen) - rss_before) / calls, 3)},
    }


def cloud_settings(url: str, tts: str, first_clause_words: int | None = None,
                   conversation: dict[str, Any] | None = None, stt: str = "deepgram",
                   flux_eager: float | None = None, send_chunk_ms: int | None = None) -> Settings:
    conv: dict[str, Any] = {"greeting": "Hi, how can I help?", "transcripts_dir": "", **(conversation or {})}
    if first_clause_words is not None:
        conv["first_clause_words"] = first_clause_words
    stt_settings: dict[str, Any] = {"providers": [stt], "deepgram_url": url,
                                    "flux_eager_eot_threshold": flux_eager}
    if send_chunk_ms is not None:
        stt_settings["send_chunk_ms"] = send_chunk_ms
    return Settings.model_validate({
        "conversation": conv,
        "stt": stt_settings,
        "llm": {"providers": ["openai"], "base_url": f"{url}/v1", "model": "gpt-4o"},
        "tts": {"providers": [tts], "elevenlabs_url": url},
    })


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), to see how busy the fakes were."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace, url: str, questions: list[bytes], fakes_pid: int,
              fakes: Connection | None = None) -> dict[str, Any]:
    secrets = Secrets.from_env(
        {"DEEPGRAM_API_KEY": DEEPGRAM_KEY, "OPENAI_API_KEY": OPENAI_KEY, "ELEVENLABS_API_KEY": ELEVENLABS_KEY}
    )
    out: dict[str, Any] = {}
    for stt in args.stt:
        for tts in args.tts:
            settings = cloud_settings(url, tts, args.first_clause_words, {
                "preemptive_generation": args.preemptive == "on",
                "adaptive_endpointing": args.adaptive == "on",
                "preemptive_on_interim": args.on_interim == "on",
            }, stt=stt, flux_eager=flux_eager_threshold(args),
                send_chunk_ms=args.send_chunk_ms)
            for calls in args.calls:
                for setting in gc_settings(args):  # several: back to back, same call count
                    cpu, wall = cpu_seconds(fakes_pid), time.monotonic()
                    ramp = args.ramp_s if calls > 1 else 0.0
                    profile = CallbackProfile() if calls in args.callback_profile else None
                    result = await scenario(calls, settings, secrets, questions, args.turns, ramp, fakes,
                                            profile, args.turns_out, f"{stt}/{tts}/{args.answer_now}",
                                            args.gc_freeze == "on", calls in args.gc_census, setting,
                                            args.tts_spares)
                    busy = (cpu_seconds(fakes_pid) - cpu) / (time.monotonic() - wall)
                    result["fakes_cores_busy"] = round(busy, 3)
                    result["load_average"] = os.getloadavg()  # the machine's, at the end of the run
                    result["gc_threshold"] = gc_label(setting)
                    if profile is not None:
                        result["callback_profile"] = profile.report()
                    key = f"{stt}/{tts}/{calls}"
                    if len(gc_settings(args)) > 1:
                        key += f"/gc={gc_label(setting)}"
                    out[key] = result
    if len(gc_settings(args)) > 1:
        out["gc_ab"] = gc_ab(out)
    return out


def with_fakes(args: argparse.Namespace, answer: str, questions: list[bytes]) -> dict[str, Any]:
    """Run the scenarios against a fresh fakes process that always gives ``answer``."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    flux_ms = (args.flux_eager_ms, args.flux_eot_ms)
    dg_interims = (args.dg_interim_ms, args.dg_interim_on_silence == "on")
    fakes = ctx.Process(target=serve_fakes, args=(child, args.token_ms / 1000, answer, flux_ms, dg_interims),
                        daemon=True)
    fakes.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the fakes did not start")
        assert fakes.pid is not None
        return event_loop.run(run(args, parent.recv(), questions, fakes.pid, parent), args.loop)
    finally:
        parent.close()
        fakes.join(10)
        if fakes.is_alive():
            fakes.terminate()


def serial_sum(answer: str, first_clause_words: int, token_ms: float, endpointing_ms: int,
               flux_eot_ms: int | None = None) -> float:
    """endpointing window + STT final (midpoint of its range) + LLM first token + the rest of
    the first clause's tokens + TTS first byte: the voice-to-voice of a strictly serial chain
    (one token a word). With Flux (``flux_eot_ms``), its EndOfTurn delay stands for the window
    and the final together."""
    splitter = ClauseSplitter(first_clause_words=first_clause_words)
    first = next(c for word in answer.split(" ") for c in splitter.push(word + " "))  # as streamed
    words = len(first.split())
    # the STT final's delay is a range: its midpoint stands for it
    chain = {k: sum(v) / 2 if isinstance(v, tuple) else v for k, v in PROFILE.items()}
    if flux_eot_ms is not None:
        chain["stt_final_s"] = 0.0
        endpointing_ms = flux_eot_ms
    return round(endpointing_ms + sum(chain.values()) * 1000 + (words - 1) * token_ms, 1)


def add_shared_args(parser: argparse.ArgumentParser) -> None:
    """The options this bench and stream_capacity.py both take."""
    parser.add_argument("--flux-eager", default="0.5",
                        help="stt.flux_eager_eot_threshold for deepgram-flux (off: no EagerEndOfTurn)")
    parser.add_argument("--tts-spares", type=int, default=None,
                        help="spare TTS sockets the provider may keep (elevenlabs-ws; default its own, "
                             "1 = the single spare of before 2026-12-02)")
    parser.add_argument("--gc-freeze", choices=["on", "off"], default="on",
                        help="the daemon's GC policy once the providers are up (gc_policy.py: freeze); "
                             "off: nothing frozen, every full pass walking the SDKs' objects, as the "
                             "bench before 2026-12-02 08:00")
    parser.add_argument("--gc-threshold", nargs="+", default=None, metavar="SETTING",
                        help="gc.set_threshold() for the calls: one or more settings, each 'default' "
                             "(Python's 700,10,10) or 'A,B,C', run one after the other at each call "
                             "count (an A/B in one command: --gc-threshold default 10000,20,10); "
                             "the old form of three numbers (10000 20 10) is one setting")


def gc_settings(args: argparse.Namespace) -> list[tuple[int, int, int] | None]:
    """--gc-threshold as the settings to run, None for Python's own (the daemon's)."""
    tokens: list[str] | None = args.gc_threshold
    if not tokens:
        return [None]
    if len(tokens) == 3 and all(t.isdigit() for t in tokens):  # the old form: one setting
        tokens = [",".join(tokens)]
    out: list[tuple[int, int, int] | None] = []
    for token in tokens:
        if token == "default":
            out.append(None)
            continue
        parts = token.split(",")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise SystemExit(f"--gc-threshold: {token!r} is neither 'default' nor 'A,B,C'")
        out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def gc_label(setting: tuple[int, int, int] | None) -> str:
    return "default" if setting is None else ",".join(map(str, setting))


def gc_ab(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The GC A/B side by side, a line a run (both benches print it with several settings)."""
    return [gc_ab_row(key, result) for key, result in results.items()]


def gc_ab_row(key: str, result: dict[str, Any]) -> dict[str, Any]:
    pauses = result.get("gc_pauses", {})
    return {"run": key, "gc_threshold": result.get("gc_threshold"),
            "voice_to_voice_ms": result.get("voice_to_voice_ms"),
            "gc_cpu_ms": round(sum(g["cpu_ms"] for g in pauses.values()), 1),
            "gc_passes": {gen: g["passes"] for gen, g in pauses.items()},
            "longest_gc_pause_cpu_ms": max((g["max_cpu_ms"] for g in pauses.values()), default=0.0),
            "loop_lag_ms": result.get("loop_lag_ms"), "cpu_cores_busy": result.get("cpu_cores_busy")}


def flux_eager_threshold(args: argparse.Namespace) -> float | None:
    return None if args.flux_eager == "off" else float(args.flux_eager)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_shared_args(parser)
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--tts", nargs="+", default=["elevenlabs-ws", "elevenlabs"],
                        choices=["elevenlabs-ws", "elevenlabs-multi", "elevenlabs"])
    parser.add_argument("--token-ms", type=float, default=20.0, help="LLM time per token after the first")
    parser.add_argument("--ramp-s", type=float, default=10.0,
                        help="calls start spread over this long (setup costs ~35 ms CPU each: VAD model)")
    parser.add_argument("--answers", nargs="+", default=list(ANSWERS), choices=list(ANSWERS))
    parser.add_argument("--first-clause-words", type=int, default=None,
                        help="conversation.first_clause_words (default: the settings' default)")
    parser.add_argument("--preemptive", choices=["on", "off"], default="on",
                        help="conversation.preemptive_generation")
    parser.add_argument("--adaptive", choices=["on", "off"], default="on",
                        help="conversation.adaptive_endpointing")
    parser.add_argument("--on-interim", choices=["on", "off"], default="on",
                        help="conversation.preemptive_on_interim")
    parser.add_argument("--stt", nargs="+", default=["deepgram"], choices=["deepgram", "deepgram-flux"],
                        help="STT provider(s), measured one after the other")
    parser.add_argument("--dg-interim-ms", type=int, default=1000,
                        help="fake Deepgram v1 interim cadence (documented: about 1 s)")
    parser.add_argument("--dg-interim-on-silence", choices=["on", "off"], default="off",
                        help="fake Deepgram v1 sends every word as an interim when speech stops "
                             "(not documented either way: off = only the cadence's interims)")
    parser.add_argument("--flux-eager-ms", type=int, default=150,
                        help="the fake Flux's silence before EagerEndOfTurn")
    parser.add_argument("--flux-eot-ms", type=int, default=300,
                        help="the fake Flux's silence before EndOfTurn")
    parser.add_argument("--send-chunk-ms", type=int, default=None,
                        help="stt.send_chunk_ms: caller audio to the STT in chunks this long (default: the "
                             "settings' default; 20 sends every frame)")
    parser.add_argument("--loop", choices=event_loop.LOOP_NAMES, default=event_loop.DEFAULT_LOOP,
                        help="the measured (bridge) process's event loop; the fakes: asyncio")
    parser.add_argument("--turns-out", default=None,
                        help="append one JSON line per turn (scenario, marks, stage spans, worst loop lag "
                             "of the bridge and the fakes per stage) to this file")
    parser.add_argument("--gc-census", type=int, nargs="*", default=[],
                        help="at these call counts, count the GC-tracked objects by type once all calls "
                             "are up (a ~1 s pause of the measured process)")
    parser.add_argument("--callback-profile", type=int, nargs="*", default=[],
                        help="at these call counts, time every callback of the bridge's loop (thread CPU "
                             "and wall time; adds ~1 us each) and print the longest (loop_probe.py)")
    args = parser.parse_args()
    if args.turns % len(QUESTIONS):
        # The fakes' scripts run on across scenarios (one fakes process per answer shape): with
        # a multiple of the questions, each scenario's caller and the fake STT stay in step, so
        # every transcript is the question actually spoken (else the interims' word counts, and
        # so what preemption can do with them, depend on the scenario's place in the run).
        args.turns += len(QUESTIONS) - args.turns % len(QUESTIONS)
        print(f"turns rounded up to {args.turns} (a multiple of the questions)", file=sys.stderr)
    conv = Settings().conversation
    words = conv.first_clause_words if args.first_clause_words is None else args.first_clause_words
    with tempfile.TemporaryDirectory() as tmp:
        questions = [speak(q, Path(tmp), f"q{i}") for i, q in enumerate(QUESTIONS)]
    out: dict[str, Any] = {
        "profile_ms": {k.removesuffix("_s"): _ms(v) for k, v in PROFILE.items()},
        "event_loop": args.loop,
        "llm_token_ms": args.token_ms,
        "first_clause_words": words,
        "preemptive_generation": args.preemptive,
        "adaptive_endpointing": args.adaptive,
        "preemptive_on_interim": args.on_interim,
        "endpointing_ms": conv.endpointing_ms,
        "stt_send_chunk_ms": args.send_chunk_ms or Settings().stt.send_chunk_ms,
        "answers": {name: ANSWERS[name] for name in args.answers},
        # what the same chain costs done one step after the other, with the fixed window
        "stt": args.stt,
        "deepgram_interims": {"every_ms": args.dg_interim_ms, "on_silence": args.dg_interim_on_silence},
        "flux_ms": {"eager_eot_threshold": args.flux_eager, "eager_after": args.flux_eager_ms,
                    "end_of_turn_after": args.flux_eot_ms},
        "serial_sum_ms": {stt: {name: serial_sum(ANSWERS[name], words, args.token_ms, conv.endpointing_ms,
                                                 args.flux_eot_ms if stt == "deepgram-flux" else None)
                                for name in args.answers} for stt in args.stt},
        "results": {name: with_fakes(argparse.Namespace(**vars(args), answer_now=name), ANSWERS[name],
                                     questions) for name in args.answers},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
