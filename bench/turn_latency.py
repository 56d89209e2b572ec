"""Per-turn latency of the conversation engine: voice-to-voice and the bridge's own overhead.

Calls run on in-memory legs paced in real time (20 ms ticks, send phase first, like the RTP
leg) with the real VAD on espeak-ng caller speech. Two provider sets:
- ``instant``: zero-latency in-process STT/LLM/TTS, so everything measured is the bridge
  (1 and 100 concurrent calls by default);
- ``offline``: the real offline engines (pocketsphinx, scripted agent, espeak-ng), 1 call.

Per turn (DESIGN.md latency marks): voice_to_voice = first_audio_out - user_speech_end;
bridge_overhead = first agent packet out - end of turn - provider waits. ``dispatch`` is
the overhead without the wait for the leg's next 20 ms tick (end of turn -> first play()).

Usage: .venv/bin/python bench/turn_latency.py [--calls 1 100] [--turns 3] [--no-offline]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bridge.callmodel import CallInfo
from bridge.conversation import run_conversation
from bridge.conversation.fallback import presynthesize
from bridge.conversation.transcript import TranscriptWriter
from bridge.providers.base import (
    AudioChunk,
    LlmEvent,
    Message,
    TextDelta,
    ToolSpec,
    Transcript,
)
from bridge.providers.factory import ProviderSet, build_providers
from bridge.settings import Secrets, Settings
from devkit.memory_leg import MemoryLeg

QUESTIONS = ["Where are you located?", "Are you open on Saturday?", "I would like to make an appointment."]


def espeak_pcm(text: str, folder: Path, name: str) -> bytes:
    raw, out = folder / f"{name}.raw.wav", folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+klatt", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", "-R", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out)], check=True,
                   capture_output=True)
    import wave

    with wave.open(str(out), "rb") as w:
        return w.readframes(w.getnframes())


# -- zero-latency providers ---------------------------------------------------------------------
class InstantStream:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Transcript] = asyncio.Queue()

    async def send(self, pcm: bytes) -> None:
        return None

    async def finalize(self) -> None:
        self.queue.put_nowait(Transcript("when are you open", is_final=True, end_of_utterance=True))

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while True:
            yield await self.queue.get()

    async def close(self) -> None:
        return None


class InstantSTT:
    name = "instant"

    async def open(self) -> InstantStream:
        return InstantStream()


class InstantLLM:
    name = "instant"

    async def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LlmEvent]:
        if messages and messages[-1].role == "user":
            yield TextDelta("We are open from nine to six. ")
            yield TextDelta("Anything else?")


class InstantTTS:
    name = "instant"
    _pcm = (np.sin(np.arange(8000) * 2 * np.pi * 220 / 8000) * 6000).astype("<i2").tobytes()  # 1 s

    async def synthesize(self, text: AsyncIterator[str]) -> AsyncIterator[AudioChunk]:
        async for _clause in text:
            yield AudioChunk(self._pcm)

    async def aclose(self) -> None:
        return None


class Capture(TranscriptWriter):
    def __init__(self) -> None:
        super().__init__(None)
        self.latency: list[dict[str, Any]] = []
        self.users: list[str] = []

    def write(self, event: str, **data: Any) -> None:
        if event == "latency":
            self.latency.append(data)
        elif event == "user":
            self.users.append(str(data.get("text", "")))


# -- one call -------------------------------------------------------------------------------------
async def one_call(n: int, providers: ProviderSet, settings: Settings, questions: list[bytes],
                   fallback: bytes, turns: int) -> tuple[list[dict[str, float]], list[float]]:
    leg = MemoryLeg(f"bench-{n}")
    capture = Capture()
    info = CallInfo(leg.call_id, "sip:caller@bench", "sip:agent@bench", ("127.0.0.1", 5060))
    task = asyncio.create_task(run_conversation(
        leg, providers, settings, transcript=capture, call_info=info, fallback_audio=fallback,
    ))
    # calls do not all start on the same tick phase
    await asyncio.sleep((n % 20) / 1000)
    leg.start_realtime()
    dispatch: list[float] = []
    try:
        await _wait(lambda: bool(leg.sent) and not leg.queued_ms(), 15)  # the greeting played
        for i in range(turns):
            await asyncio.sleep(0.3)
            before = len(capture.latency)
            leg.say(questions[i % len(questions)])
            await _wait(lambda b=before: len(capture.latency) > b, 20)  # type: ignore[misc]
            await _wait(lambda: not leg.queued_ms(), 30)  # the whole answer is heard
        await leg.remote_hangup("bye")
        await asyncio.wait_for(task, 10)
    finally:
        await leg.aclose()
    # the pacing wait of each reply: first play() -> first packet out
    starts: dict[str, float] = {}
    for frame in leg.sent:
        starts.setdefault(frame.utterance_id, frame.t)
    replies = [u for u in starts if u != leg.sent[0].utterance_id and not u.startswith("fb")]
    waits = [starts[u] - leg.first_queued[u] for u in replies if u in leg.first_queued]
    for marks, wait in zip(capture.latency, waits, strict=False):
        dispatch.append(max(0.0, marks["bridge_overhead"] - wait * 1000))
    return capture.latency, dispatch


async def _wait(cond: Any, limit_s: float) -> None:
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("bench call stalled")
        await asyncio.sleep(0.01)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def summary(latency: list[dict[str, float]], dispatch: list[float]) -> dict[str, Any]:
    v2v = [m["voice_to_voice"] for m in latency if "voice_to_voice" in m]
    over = [m["bridge_overhead"] for m in latency if "bridge_overhead" in m]
    stt = [m["stt_final"] for m in latency if "stt_final" in m]
    return {
        "turns": len(latency),
        "voice_to_voice_ms": {"p50": pct(v2v, 0.5), "p95": pct(v2v, 0.95), "max": pct(v2v, 1.0)},
        "bridge_overhead_ms": {"p50": pct(over, 0.5), "p95": pct(over, 0.95), "max": pct(over, 1.0)},
        "dispatch_ms": {"p50": pct(dispatch, 0.5), "p95": pct(dispatch, 0.95), "max": pct(dispatch, 1.0)},
        "end_of_turn_ms": {"p50": pct(stt, 0.5), "p95": pct(stt, 0.95)},
        "mean_voice_to_voice_ms": round(statistics.fmean(v2v), 2) if v2v else None,
    }


async def scenario(calls: int, providers: ProviderSet, settings: Settings, questions: list[bytes],
                   turns: int) -> dict[str, Any]:
    fallback = await presynthesize(providers.tts, settings.conversation.fallback_text)
    started = time.process_time()
    wall = time.monotonic()
    results = await asyncio.gather(
        *(one_call(n, providers, settings, questions, fallback, turns) for n in range(calls))
    )
    latency = [m for r in results for m in r[0]]
    dispatch = [d for r in results for d in r[1]]
    out = summary(latency, dispatch)
    out["calls"] = calls
    busy = (time.process_time() - started) / max(1e-9, time.monotonic() - wall)
    out["cpu_s_per_call_s"] = round(busy / calls, 4)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--no-offline", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        questions = [espeak_pcm(q, Path(tmp), f"q{i}") for i, q in enumerate(QUESTIONS)]
    settings = Settings.model_validate({"conversation": {"greeting": "Hi.", "transcripts_dir": ""}})
    out: dict[str, Any] = {"endpointing_ms": settings.conversation.endpointing_ms, "instant": {}}
    instant = ProviderSet([InstantSTT()], [InstantLLM()], [InstantTTS()])  # type: ignore[list-item]
    for calls in args.calls:
        out["instant"][str(calls)] = await scenario(calls, instant, settings, questions, args.turns)
    if not args.no_offline:
        offline = build_providers(settings, Secrets())
        try:
            out["offline"] = await scenario(1, offline, settings, questions, args.turns)
        finally:
            aclose = getattr(offline.stt[0], "aclose", None)
            if aclose is not None:
                await aclose()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
