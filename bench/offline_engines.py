"""The offline speech engines' speed and memory; prints JSON.

    .venv/bin/python bench/offline_engines.py [--rounds 3]

Caller audio is the demo script's phrasings spoken by espeak-ng (en-us+klatt) through a mu-law
round trip, as a phone call delivers it. Reported:

- ``stt``: pocketsphinx through the real provider (decoder process, pipe, resampler).
  ``rtf_unpaced``: audio fed as fast as the decoder takes it; wall time from the first frame to
  the final divided by the audio's duration (and the decoder process's CPU time likewise).
  ``finalize_to_final_ms``: audio paced at real time (20 ms frames), then ``finalize()``: time
  until the final transcript arrives (the STT's share of the end-of-turn latency).
  ``first_interim_ms``: from the first frame of speech to the first interim result.
  ``loop_lag_ms``: how late a 5 ms timer fires on the event loop while audio streams (decoding
  must stay off the loop). ``cold_open_s``: open() to READY with no warm decoder.
- ``tts``: espeak-ng in-process, resampled to 8 kHz: time to the first audio chunk of a clause,
  real-time factor, and the loop lag while it synthesises.
- ``llm``: the scripted agent's time to its first text delta.
- ``resample``: the streaming 8k -> 16k resampler per 20 ms chunk.
- ``memory_mib``: this process's RSS (TTS engine, resampler, script loaded) and one decoder
  process's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio import g711
from bridge.audio.resample import StreamResampler
from bridge.conversation.convert import ChunkConverter
from bridge.providers.base import Message, TextDelta
from bridge.providers.llm.script_model import load_script
from bridge.providers.llm.scripted import ScriptedLLM
from bridge.providers.stt.pocketsphinx_stt import PocketsphinxStream, PocketsphinxSTT
from bridge.providers.tts.espeak_tts import EspeakTTS

PHRASES = [
    "Where are you located?",
    "What are your opening hours?",
    "I would like to make an appointment.",
    "In the morning, please.",
    "I need an operator.",
    "That is all, thank you.",
]
FRAME = 320  # 20 ms at 8 kHz
CLK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "max": round(max(values), 2), "n": len(values)}


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


async def one(text: str) -> AsyncIterator[str]:
    yield text


class LagProbe:
    """How late a short periodic timer fires: the event loop's responsiveness."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period = period_s
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            self.lags.append((loop.time() - due) * 1000)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()

    def __enter__(self) -> LagProbe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def speech(tts: EspeakTTS, text: str) -> bytes:
    converter = ChunkConverter()  # as the call plays it: the one place that resamples
    pcm = b"".join([converter.convert(c) async for c in tts.synthesize(one(text))]) + converter.flush()
    padded = bytes(3200) + pcm + bytes(4800)  # 200 ms before, 300 ms after, as a VAD cut
    return g711.ulaw_to_pcm(g711.pcm_to_ulaw(padded))


async def next_final(stream_iter: AsyncIterator[Any], on_interim: Any = None) -> Any:
    async with asyncio.timeout(30):
        async for t in stream_iter:
            if t.is_final:
                return t
            if on_interim is not None:
                on_interim(t)
    raise RuntimeError("stream ended without a final")


async def bench_stt(audios: list[bytes], rounds: int, corpus: str) -> dict[str, Any]:
    stt = PocketsphinxSTT(idle_decoders=1, corpus=corpus)
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    cold: PocketsphinxStream = await stt.open()
    # the stream's reader consumes READY: a finalize round trip shows the decoder is up
    it = aiter(cold.transcripts())
    await cold.finalize()
    await next_final(it)
    cold_open_s = time.perf_counter() - t0
    worker_rss = rss_mib(cold._worker.pid)
    await cold.close()
    await stt._pool.settled()

    audio_s = sum(len(a) for a in audios) / 16000
    unpaced_wall: list[float] = []
    unpaced_cpu: list[float] = []
    finalize_ms: list[float] = []
    first_interim_ms: list[float] = []
    lag = LagProbe()
    for _ in range(rounds):
        stream = await stt.open()
        pid = stream._worker.pid
        it = aiter(stream.transcripts())
        # unpaced: as fast as the decoder takes it
        cpu0, w0 = cpu_s(pid), time.perf_counter()
        for audio in audios:
            for i in range(0, len(audio), FRAME):
                await stream.send(audio[i : i + FRAME])
            await stream.finalize()
            await next_final(it)
        unpaced_wall.append((time.perf_counter() - w0) / audio_s)
        unpaced_cpu.append((cpu_s(pid) - cpu0) / audio_s)
        # paced at real time, like a call; loop lag measured only here (the unpaced feed
        # above never yields, by design)
        lag.start()
        for audio in audios:
            start = loop.time()
            first: list[float] = []

            def on_interim(_t: Any, first: list[float] = first, start: float = start) -> None:
                if not first:
                    first.append((loop.time() - start - 0.2) * 1000)  # speech starts after 200 ms

            reader = loop.create_task(next_final(it, on_interim))
            for n, i in enumerate(range(0, len(audio), FRAME)):
                await stream.send(audio[i : i + FRAME])
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
            t_fin = loop.time()
            await stream.finalize()
            await reader
            finalize_ms.append((loop.time() - t_fin) * 1000)
            if first:
                first_interim_ms.append(first[0])
        lag.stop()
        await stream.close()
    await stt.aclose()
    return {
        "audio_s_per_round": round(audio_s, 2),
        "rtf_unpaced_wall": round(float(np.median(unpaced_wall)), 4),
        "rtf_unpaced_decoder_cpu": round(float(np.median(unpaced_cpu)), 4),
        "finalize_to_final_ms": summary(finalize_ms),
        "first_interim_ms": summary(first_interim_ms),
        "loop_lag_ms": summary(lag.lags),
        "cold_open_s": round(cold_open_s, 3),
        "decoder_process_rss_mib": worker_rss,
    }


async def bench_tts(tts: EspeakTTS, rounds: int) -> dict[str, Any]:
    first_ms: list[float] = []
    rtf: list[float] = []
    with LagProbe() as lag:
        for _ in range(rounds):
            for text in PHRASES:
                t0 = time.perf_counter()
                first = 0.0
                n = 0
                async for chunk in tts.synthesize(one(text)):
                    if not first:
                        first = time.perf_counter() - t0
                    n += len(chunk.data) * 8000 // chunk.sample_rate  # 8 kHz bytes
                first_ms.append(first * 1000)
                rtf.append((time.perf_counter() - t0) / (n / 16000))
    return {
        "first_chunk_ms": summary(first_ms),
        "rtf": round(float(np.median(rtf)), 4),
        "loop_lag_ms": summary(lag.lags),
    }


async def bench_llm(rounds: int) -> dict[str, Any]:
    llm = ScriptedLLM(load_script("config/agent-script.toml"))
    first_ms: list[float] = []
    for _ in range(rounds):
        for text in PHRASES:
            t0 = time.perf_counter()
            async for event in llm.stream([Message("user", text.lower())], []):
                if isinstance(event, TextDelta):
                    first_ms.append((time.perf_counter() - t0) * 1000)
                    break
    return {"first_delta_ms": summary(first_ms)}


def bench_resample(audio: bytes) -> dict[str, Any]:
    r = StreamResampler(8000, 16000)
    chunks = [audio[i : i + FRAME] for i in range(0, len(audio) - FRAME + 1, FRAME)]
    t0 = time.perf_counter()
    for c in chunks:
        r.push(c)
    per_chunk_us = (time.perf_counter() - t0) / len(chunks) * 1e6
    return {"per_20ms_chunk_us": round(per_chunk_us, 1)}


async def main(rounds: int, corpus: str) -> dict[str, Any]:
    tts = EspeakTTS("en-us+klatt", 165)
    audios = [await speech(tts, p) for p in PHRASES]
    out: dict[str, Any] = {"phrases": PHRASES, "rounds": rounds}
    out["tts"] = await bench_tts(tts, rounds)
    out["llm"] = await bench_llm(rounds)
    out["resample"] = bench_resample(b"".join(audios))
    out["stt"] = await bench_stt(audios, rounds, corpus)
    out["stt"]["language_model"] = corpus or "general (en-us)"
    out["memory_mib"] = {
        "bridge_process_rss": rss_mib(),
        "decoder_process_rss": out["stt"]["decoder_process_rss_mib"],
    }
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", default="", help="stt.pocketsphinx_corpus, e.g. config/agent-script.toml")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rounds, args.corpus)), indent=2))
