"""CPU time per call per 20 ms tick of the conversation loop's bridge side, in one process;
prints JSON.

    .venv/bin/python bench/conversation_frame_cost.py [--calls 100] [--seconds 30] [--tree DIR]
        [--decisions-out FILE] [--silero-slice N] [--callback-profile] [--clock-groups N]

N conversations (the real driver, engine, VAD (webrtc + shared, batched silero), level gate,
echo guard, STT feed) on in-memory legs, with zero-cost in-process providers (an STT that
answers each Finalize with a final, an LLM that streams a two-clause answer in four deltas, a
TTS that gives 1 s of tone a clause), so what is measured is the bridge's own per-call work and
not the vendor SDKs'. Each caller asks an espeak-ng question every 5 s (staggered by call),
the agent answers (2 s of audio), and so on: about 30 % of ticks carry caller speech, as in
``bench/voice_to_voice.py``.

Time is virtual (devkit/virtual_loop.py, loaded from this bench's own checkout): the event loop's
clock moves only from one timer to the next, the loop running until nothing is ready at each, so
the tree's own media clock runs as in the daemon, its task waking each group at its offset into
the period (group k at k * 20 ms / groups; ``--clock-groups`` sets their number), and every
other timer (silero's held runs, the engines' deadlines) fires at its exact time, whatever the
box's load. The drivers and legs read that same clock (LoopClock). So the run is the same on a
busy box as on a quiet one (same frames, same silero batches, same decisions:
``decisions_digest`` hashes every call's transcript events and the times and utterances of the
agent frames it sent), and the figure is the thread's CPU time (``time.thread_time``: silero's
ONNX Runtime runs in this thread) over the calls' ticks. With 2 or 4 groups the digest differs
from 1 group's (a leg's frames are stamped with its group's tick time), and a tree that holds
silero's windows (silero_shared.HOLD) decides some frames up to HOLD later than one that does
not, so its digest differs from main's for 2 and 4 groups; with 1 group (nothing is held: every
window comes in one pass a period) it must equal main's.
``silero_runs_per_period`` is the session runs a 20 ms period (1 when a period's windows run
together), ``silero_held_batches`` the batches that waited for more windows (None for a tree
without holding). ``--tree`` measures another checkout (e.g. a ``git archive`` of main) for a
back-to-back A/B; ``--decisions-out`` writes what the digest hashes, a line each, to diff two
runs or two trees.
Before the legs join the media clock, the bench waits (real time, virtual time standing still)
until every call has queued its greeting: the drivers load their VADs in threads, and without
the wait the greetings' first frames went out in one tick or the next depending on thread
timing, which made the digest vary run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

QUESTIONS = ["Where are you located?", "Are you open on Saturday?", "I would like to make an appointment."]
_PERIOD_TICKS = 250  # a question every 5 s of the call
_TICK = 0.020


def virtual_loop() -> Any:
    """devkit/virtual_loop.py of this bench's checkout (``--tree`` may be one without it)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "devkit" / "virtual_loop.py"
    spec = importlib.util.spec_from_file_location("_bench_virtual_loop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def speak(text: str, folder: Path, name: str) -> bytes:
    from bridge.audio.wavfile import read_wav_8k_mono

    path = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+klatt", "-s", "165", "-w", str(path), text],
                   check=True, capture_output=True, timeout=30)
    return read_wav_8k_mono(path)


def providers() -> Any:
    import numpy as np

    from bridge.providers.base import AudioChunk, LlmEvent, Message, TextDelta, ToolSpec, Transcript
    from bridge.providers.factory import ProviderSet

    class Stream:
        def __init__(self) -> None:
            self.queue: asyncio.Queue[Transcript] = asyncio.Queue()

        async def send(self, pcm: bytes) -> None:
            return None

        async def finalize(self) -> None:
            heard = Transcript("Are you open on Saturday?", is_final=True, end_of_utterance=True)
            self.queue.put_nowait(heard)

        async def transcripts(self) -> AsyncIterator[Transcript]:
            while True:
                yield await self.queue.get()

        async def close(self) -> None:
            return None

    class Stt:
        name = "instant"

        async def open(self) -> Stream:
            return Stream()

    class Llm:
        name = "instant"

        async def stream(self, messages: Sequence[Message],
                         tools: Sequence[ToolSpec]) -> AsyncIterator[LlmEvent]:
            if messages and messages[-1].role == "user":
                for delta in ("We are open ", "from nine to six. ", "Anything ", "else?"):
                    yield TextDelta(delta)

    class Tts:
        name = "instant"
        pcm = (np.sin(np.arange(8000) * 2 * np.pi * 220 / 8000) * 6000).astype("<i2").tobytes()  # 1 s

        async def synthesize(self, text: AsyncIterator[str]) -> AsyncIterator[AudioChunk]:
            async for _clause in text:
                for i in range(0, len(self.pcm), 3200):  # 100 ms chunks, as a TTS streams
                    yield AudioChunk(self.pcm[i : i + 3200])

        async def aclose(self) -> None:
            return None

    return ProviderSet([Stt()], [Llm()], [Tts()])  # type: ignore[list-item]


async def measure(calls: int, seconds: float, questions: list[bytes], vloop: Any,
                  decisions: list[str] | None = None, profile: Any = None,
                  clock_groups: int | None = None) -> dict[str, Any]:
    from bridge.callmodel import CallInfo
    from bridge.conversation import run_conversation
    from bridge.conversation.driver_clock import LoopClock
    from bridge.conversation.silero_shared import shared_silero
    from bridge.conversation.transcript import TranscriptWriter
    from bridge.media.media_clock import MediaClock
    from bridge.settings import Settings
    from devkit.memory_leg import MemoryLeg

    class Capture(TranscriptWriter):
        def __init__(self) -> None:
            super().__init__(None)
            self.turns = 0
            self.log: list[str] = []  # what the engine decided, for the digest

        def write(self, event: str, **data: Any) -> None:
            if event == "latency":
                self.turns += 1
            self.log.append(f"{event} {sorted(data.items())!r}")

    settings = Settings.model_validate({"conversation": {"greeting": "Hi.", "transcripts_dir": ""}})
    shared_silero()
    clock = LoopClock()  # the loop's virtual time, as the daemon's drivers read the loop's
    provider_set = providers()
    legs = [MemoryLeg(f"cost-{n}", clock) for n in range(calls)]
    captures = [Capture() for _ in range(calls)]
    tasks = [
        asyncio.create_task(run_conversation(
            leg, provider_set, settings, transcript=cap, clock=clock, fallback_audio=b"",
            call_info=CallInfo(leg.call_id, "sip:caller@bench", "sip:agent@bench", ("127.0.0.1", 5060)),
        ))
        for leg, cap in zip(legs, captures, strict=True)
    ]
    loop = asyncio.get_running_loop()
    settle, run_until = vloop.settle, vloop.run_until

    # Each driver loads its VAD in a thread (asyncio.to_thread) before its engine starts, and
    # the virtual loop cannot see a thread still running: wait (real time, bounded) until
    # every call has queued its greeting, virtual time standing still.
    for _ in range(1000):
        await settle()
        if all(leg.first_queued for leg in legs):
            break
        time.sleep(0.01)  # noqa: ASYNC251  (real time on purpose: the loop cannot wait for a thread)
    else:
        raise RuntimeError("a call did not queue its greeting within 10 s")
    # The legs tick on the tree's own media clock, its task running on virtual time: each
    # group at its offset into the period, a loop callback each, as in the daemon.
    grouped = {} if clock_groups is None else {"groups": clock_groups}
    media = MediaClock(loop, _TICK, **grouped)
    for leg in legs:
        media.add(leg)
    origin = loop.time()

    async def tick(t: int) -> None:
        """Tick t: every group once (group 0's tick at its end), the questions said first."""
        for n, leg in enumerate(legs):
            if t % _PERIOD_TICKS == (n * 7) % _PERIOD_TICKS and t >= _PERIOD_TICKS // 2:
                leg.say(questions[(n + t // _PERIOD_TICKS) % len(questions)])
        await run_until(origin + (t + 1) * _TICK)

    ticks = round(seconds / 0.020)
    warm = _PERIOD_TICKS // 2
    for t in range(warm):  # the greetings and VADs loaded (their threads), not counted
        await tick(t)
    gc.collect()
    silero = shared_silero()
    runs, windows = silero.runs, silero.windows
    batch = silero.batch()
    batch.largest = 0  # the measured ticks' only
    held_before = getattr(batch, "held_runs", 0)
    # silero's inference on its own (the same work on both sides of an A/B, and the noisiest
    # part on a shared box: cache-bound), so the rest of the loop's cost can be read apart
    inference = [0.0]
    plain_run = silero.run

    def timed_run(*args: Any) -> Any:
        start = time.thread_time()
        try:
            return plain_run(*args)
        finally:
            inference[0] += time.thread_time() - start

    silero.run = timed_run  # type: ignore[method-assign]
    if profile is not None:
        profile.install()
    cpu = time.thread_time()
    for t in range(warm, warm + ticks):
        await tick(t)
    cpu = time.thread_time() - cpu
    held = getattr(batch, "held_runs", None)
    if profile is not None:
        profile.uninstall()
    silero.run = plain_run  # type: ignore[method-assign]
    group_sizes = getattr(media, "group_sizes", lambda: [calls])()
    for leg in legs:
        media.remove(leg)
        await leg.remote_hangup("bye")
    for _ in range(1000):  # the drivers' endings, timers and all (virtual time)
        if all(task.done() for task in tasks):
            break
        nxt = loop.next_timer()
        await run_until(loop.time() if nxt is None else max(nxt, loop.time()))
    await asyncio.gather(*tasks, return_exceptions=True)
    # The engine's decisions (transcript events with their clock times, and when each agent
    # frame went out, of which utterance): two trees that decide alike print the same digest.
    digest = hashlib.sha256()
    dump = [] if decisions is None else decisions  # what the digest hashes, a line each
    for leg, cap in zip(legs, captures, strict=True):
        sent = [(round(f.t, 3), f.utterance_id) for f in leg.sent]
        digest.update("\n".join(cap.log).encode())
        digest.update(repr(sent).encode())
        dump += [f"{leg.call_id} {line}" for line in cap.log]
        dump += [f"{leg.call_id} sent {t} {u}" for t, u in sent]
    return {
        "calls": calls,
        "ticks": ticks,
        "us_per_call_tick": round(cpu * 1e6 / (calls * ticks), 1),
        "silero_inference_us_per_call_tick": round(inference[0] * 1e6 / (calls * ticks), 1),
        "rest_us_per_call_tick": round((cpu - inference[0]) * 1e6 / (calls * ticks), 1),
        "cores_at_real_time": round(cpu / (ticks * 0.020), 3),
        "turns_answered": sum(c.turns for c in captures),
        "silero_windows_per_run": round((silero.windows - windows) / max(1, silero.runs - runs), 1),
        "silero_runs": silero.runs - runs,
        "silero_runs_per_period": round((silero.runs - runs) / ticks, 2),
        # batches that waited for more windows (silero_shared.HOLD; a tree without: no figure)
        "silero_held_batches": None if held is None else held - held_before,
        # the most windows one run (one loop callback) carried, and the most one pass queued
        # (more than the first when the batch is sliced; a tree without slices has no figure)
        "silero_largest_run": batch.largest,
        "silero_most_queued": getattr(batch, "most_queued", None),
        "decisions_digest": digest.hexdigest()[:16],
        "media_clock_groups": group_sizes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0, help="call time measured (clock, not wall)")
    ap.add_argument("--tree", type=Path, help="the checkout to measure (default: this one)")
    ap.add_argument("--silero-slice", type=int, default=None,
                    help="silero_shared.SLICE for this run (e.g. 100000: one run a pass, unsliced), "
                         "for an A/B of the slicing on one tree; default: the tree's own")
    ap.add_argument("--callback-profile", action="store_true",
                    help="time every loop callback of the measured ticks (thread CPU; bench/loop_probe.py): "
                         "the longest ones, runs over 1/2/5 ms, silero batch runs' percentiles and the media "
                         "clock's callback (MediaClock._run, one a group tick)")
    ap.add_argument("--clock-groups", type=int, default=None,
                    help="the media clock's groups (bridge/media/media_clock.py GROUPS) for this run; "
                         "default: the tree's own")
    ap.add_argument("--decisions-out", type=Path,
                    help="write what decisions_digest hashes to this file, a line each (call id first)")
    args = ap.parse_args()
    tree = (args.tree or Path(__file__).resolve().parents[1]).resolve()
    sys.path.insert(0, str(tree))
    with tempfile.TemporaryDirectory() as tmp:
        questions = [speak(q, Path(tmp), f"q{i}") for i, q in enumerate(QUESTIONS)]
    if args.silero_slice is not None:
        from bridge.conversation import silero_shared

        if not hasattr(silero_shared, "SLICE"):
            ap.error(f"{tree} has no silero slices")
        silero_shared.SLICE = args.silero_slice  # type: ignore[attr-defined]
    profile = None
    if args.callback_profile:
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # this bench's loop_probe.py
        import loop_probe
        from loop_probe import CallbackProfile

        # every run of the media clock's callback kept, for its percentiles (one a group tick)
        loop_probe.TRACKED = (*loop_probe.TRACKED, "MediaClock._run")
        profile = CallbackProfile()
    decisions: list[str] = []
    vloop = virtual_loop()
    loop = vloop.VirtualTimeLoop()
    try:
        result = loop.run_until_complete(
            measure(args.calls, args.seconds, questions, vloop, decisions, profile, args.clock_groups))
    finally:
        loop.close()
    if profile is not None:
        report = profile.report(top=6)
        result["callback_profile"] = {k: report[k] for k in (
            "callbacks", "cpu_s", "runs_over_ms_cpu", "tracked", "by_longest_run")}
    if args.decisions_out is not None:  # to diff two runs' decisions line by line
        args.decisions_out.write_text("\n".join(decisions) + "\n")
    print(json.dumps({"tree": str(tree), "silero_slice": args.silero_slice, **result}))


if __name__ == "__main__":
    main()
