"""The confirming VAD's CPU per call, one window at a time against one batched run per tick.

N calls each speak an espeak-ng line (with line noise, starting at different times); every
20 ms tick each call's frame goes through the default VAD (webrtc pre-filter, silero confirming
around its detections). Measured in CPU time (``time.process_time``), so a busy machine slows
it less than wall-clock figures: once with ``is_speech`` (silero run window by window, as
before batching) and once with ``speech`` awaited by one task per call (the windows of one
tick run as one batched ONNX Runtime inference). Also checks both give the same decisions.

Usage: .venv/bin/python bench/vad_batch.py [--calls 1 60 150] [--seconds 6]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bridge.audio.wavfile import read_wav_8k_mono
from bridge.conversation.silero_shared import shared_silero
from bridge.conversation.vad import WebrtcSileroVad
from bridge.leg import FRAME_BYTES

LINES = ["Where are you located?", "Are you open on Saturday?", "I would like to make an appointment."]


def caller_lines(seconds: float) -> list[np.ndarray]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(LINES):
            path = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us+klatt", "-w", str(path), text], check=True,
                           capture_output=True, timeout=30)
            out.append(np.frombuffer(read_wav_8k_mono(path), "<i2").astype(np.float64))
    total = int(seconds * 8000)
    return [np.resize(np.concatenate((line, np.zeros(4000))), total) for line in out]


def call_frames(lines: list[np.ndarray], n: int, rng: np.random.Generator) -> list[bytes]:
    """Call n: its line, shifted so calls do not speak in step, plus line noise."""
    audio = np.roll(lines[n % len(lines)], int(rng.integers(0, 8000)))
    audio = np.clip(audio + rng.normal(0, 60, audio.size), -32768, 32767).astype("<i2").tobytes()
    return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES)]


def drive(frames: list[list[bytes]], mode: str) -> tuple[list[list[bool]], float, int]:
    """One task per call per tick awaiting its frame's decision, as the conversation driver
    does (mode "batched": ``speech``; "one_by_one": ``is_speech``; "none": no VAD, the
    harness's own cost, subtracted from the others)."""

    async def run() -> tuple[list[list[bool]], float, int]:
        vads = [WebrtcSileroVad() for _ in frames]
        out: list[list[bool]] = [[] for _ in frames]
        silero = shared_silero()
        runs = silero.runs

        async def frame(i: int, tick: int) -> None:
            pcm = frames[i][tick]
            if mode == "batched":
                out[i].append(await vads[i].speech(pcm))
            elif mode == "one_by_one":
                out[i].append(vads[i].is_speech(pcm))
            else:
                out[i].append(False)

        cpu = time.process_time()
        for tick in range(len(frames[0])):  # every call's frame of this tick, as on a busy loop
            await asyncio.gather(*(frame(i, tick) for i in range(len(frames))))
        return out, time.process_time() - cpu, silero.runs - runs

    return asyncio.run(run())


def cost(vad_cpu: float, call_seconds: float, windows: int, ticks: int) -> dict[str, float]:
    vad_cpu = max(0.0, vad_cpu)
    return {"cpu_ms_per_call_second": round(vad_cpu * 1000 / call_seconds, 3),
            "cpu_us_per_window": round(vad_cpu * 1e6 / max(1, windows), 1),
            "cores_at_this_many_calls": round(vad_cpu / (ticks * 0.02), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 60, 150])
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    lines = caller_lines(args.seconds)
    shared_silero()  # the session's one-time build is not part of either figure
    results = {}
    for calls in args.calls:
        rng = np.random.default_rng(calls)
        frames = [call_frames(lines, n, rng) for n in range(calls)]
        ticks = len(frames[0])
        windows_before = shared_silero().windows
        _, harness_cpu, _ = drive(frames, "none")
        alone, alone_cpu, _ = drive(frames, "one_by_one")
        windows = shared_silero().windows - windows_before
        together, together_cpu, runs = drive(frames, "batched")
        seconds = calls * ticks * 0.02

        results[str(calls)] = {
            "calls": calls,
            "call_seconds": round(seconds, 1),
            "silero_windows": windows,
            "batched_runs": runs,
            "same_decisions": together == alone,
            # the VAD's CPU (webrtc + silero), the harness's own share taken out
            "one_by_one": cost(alone_cpu - harness_cpu, seconds, windows, ticks),
            "batched": cost(together_cpu - harness_cpu, seconds, windows, ticks),
        }
    print(json.dumps({"load_average": os.getloadavg(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
