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

Time is a manual clock: each tick every leg is stepped (agent frame out, caller frame in) by the
tree's own media clock, one loop callback per group of legs as in the daemon (one for all on a
clock without groups; ``--clock-groups`` sets their number), the event loop running until it has
nothing ready (bounded) after each, and the clock moves 20 ms. Every group's callback runs at
the same manual time (the clock moves once, after all of them): the run measures the split into
separate callbacks (silero batches, CPU per callback), not the groups' offsets within the
period, and the digest being equal for 1, 2 and 4 groups holds under that simplification. So
the run is the same on a busy box as on a quiet one (same frames, same silero batches, same decisions:
``decisions_digest`` hashes every call's transcript events and the times and utterances of the
agent frames it sent), and the figure is the thread's CPU time (``time.thread_time``: silero's
ONNX Runtime runs in this thread) over the calls' ticks.
``--tree`` measures another checkout (e.g. a ``git archive`` of main) for a back-to-back A/B;
``--decisions-out`` writes what the digest hashes, a line each, to diff two runs or two trees.
The first tick waits (real time), before any leg sends, until every call has queued its
greeting: the drivers load their VADs in threads, and without the wait the greetings' first
frames went out at 1000.00 or 1000.02 depending on thread timing, which made the digest vary
run to run.
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
_SETTLE = 200  # loop passes after each tick at most (stops as soon as nothing is ready)


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


async def measure(calls: int, seconds: float, questions: list[bytes],
                  decisions: list[str] | None = None, profile: Any = None,
                  clock_groups: int | None = None) -> dict[str, Any]:
    from bridge.callmodel import CallInfo
    from bridge.conversation import run_conversation
    from bridge.conversation.silero_shared import shared_silero
    from bridge.conversation.transcript import TranscriptWriter
    from bridge.media.media_clock import MediaClock
    from bridge.settings import Settings
    from devkit.manual_clock import ManualClock
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
    clock = ManualClock()
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
    # The legs tick on the tree's own media clock, stepped here (its timer never fires): one
    # loop callback per group tick, as in the daemon (one a tick on a clock without groups).
    grouped = {} if clock_groups is None else {"groups": clock_groups}
    media = MediaClock(loop, 3600.0, **grouped)
    for leg in legs:
        media.add(leg)

    def media_ticks() -> list[tuple[Any, ...]]:
        groups = getattr(media, "_groups", None)
        if groups is None:
            return [(media._tick,)]
        return [(media._tick_group, g) for g in groups if g.members]

    def due() -> bool:
        """A callback ready, or a timer due now (silero's next slice is one: silero_shared)."""
        timers = loop._scheduled  # type: ignore[attr-defined]
        return bool(loop._ready) or bool(timers and timers[0].when() <= loop.time())  # type: ignore[attr-defined]

    async def settle() -> None:
        for _ in range(_SETTLE):
            await asyncio.sleep(0)
            if not due():  # nothing else ready: the tick is done
                return

    async def greetings_queued() -> None:
        # Each driver loads its VAD in a thread (asyncio.to_thread) before its engine starts,
        # and settle() cannot see a thread still running: how many calls had started by the
        # end of the first tick depended on thread timing, and so did when each greeting's
        # first frame went out (1000.00 or 1000.02) and the digest. So the first tick waits
        # (real time, bounded) until every call has queued its greeting, then settles.
        for _ in range(1000):
            if all(leg.first_queued for leg in legs):
                await settle()
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("a call did not queue its greeting within 10 s")

    async def tick(t: int) -> None:
        for n, leg in enumerate(legs):
            if t % _PERIOD_TICKS == (n * 7) % _PERIOD_TICKS and t >= _PERIOD_TICKS // 2:
                leg.say(questions[(n + t // _PERIOD_TICKS) % len(questions)])
        if t == 0:
            # before any leg sends: a greeting queued during the first tick's groups would go
            # out in its group's slot or the next one, as thread timing had it (the digest)
            await greetings_queued()
        for group_tick in media_ticks():  # every leg stepped (send, then receive), group by group
            loop.call_soon(*group_tick, loop.time())
            await settle()
        clock.advance(0.020)

    ticks = round(seconds / 0.020)
    warm = _PERIOD_TICKS // 2
    for t in range(warm):  # the greetings and VADs loaded (their threads), not counted
        await tick(t)
    gc.collect()
    silero = shared_silero()
    runs, windows = silero.runs, silero.windows
    batch = silero.batch()
    batch.largest = 0  # the measured ticks' only
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
    if profile is not None:
        profile.uninstall()
    silero.run = plain_run  # type: ignore[method-assign]
    group_sizes = getattr(media, "group_sizes", lambda: [calls])()
    for leg in legs:
        media.remove(leg)
        await leg.remote_hangup("bye")
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
                         "the longest ones, runs over 1/2/5 ms, silero batch runs' percentiles. The bench's "
                         "own tick (every leg stepped, as the media clock does) is one 'task tick' callback")
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
        loop_probe.TRACKED = (*loop_probe.TRACKED, "MediaClock._tick", "MediaClock._tick_group")
        profile = CallbackProfile()
    decisions: list[str] = []
    result = asyncio.run(measure(args.calls, args.seconds, questions, decisions, profile, args.clock_groups))
    if profile is not None:
        report = profile.report(top=6)
        result["callback_profile"] = {k: report[k] for k in (
            "callbacks", "cpu_s", "runs_over_ms_cpu", "tracked", "by_longest_run")}
    if args.decisions_out is not None:  # to diff two runs' decisions line by line
        args.decisions_out.write_text("\n".join(decisions) + "\n")
    print(json.dumps({"tree": str(tree), "silero_slice": args.silero_slice, **result}))


if __name__ == "__main__":
    main()
