"""Bridge-side overhead of each cloud provider, measured against the local fakes.

For each provider the fake journals (time.monotonic, same process) the moment it writes the
message that matters -- Deepgram's final Results, OpenAI's first token, ElevenLabs' first
audio bytes -- and the bench takes the moment the bridge's provider hands the corresponding
Transcript / TextDelta / AudioChunk to its caller. The difference is what the SDK, the
loopback socket and our code add. ``request_ms`` is the whole call from the provider's entry
point to the first item with zero fake latency (includes HTTP request/handshake work).

Usage: .venv/bin/python bench/provider_overhead.py [--n 40] [--concurrency 1 20]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np

# devkit/ is not installed: run from the checkout (as the other benches do).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bridge.providers.base import Message
from bridge.providers.llm.openai_chat import OpenAIChat
from bridge.providers.stt.deepgram_stt import DeepgramSTT
from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS
from bridge.providers.tts.elevenlabs_ws import ElevenLabsWsTTS
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY

warnings.filterwarnings("ignore", category=DeprecationWarning)

Sample = tuple[float, float]  # (overhead_s, request_s)


def _speech(ms: int) -> bytes:
    t = np.arange(ms * 8) / 8000
    return (6000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def _one_clause(text: str) -> AsyncIterator[str]:
    yield text


async def stt_once(cloud: FakeCloud, stt: DeepgramSTT) -> Sample:
    stream = await stt.open()
    try:
        audio = _speech(400) + bytes(400 * 16)
        for i in range(0, len(audio), 320):
            await stream.send(audio[i : i + 320])
        started = time.monotonic()
        async for t in stream.transcripts():
            if t.end_of_utterance:
                got = time.monotonic()
                break
        sent = [e for e in cloud.deepgram.journal.of("sent") if e.data.get("is_final") and e.data.get("text")]
        server_at = max(e.at for e in sent if e.at <= got)
        return got - server_at, got - started
    finally:
        await stream.close()


async def llm_once(cloud: FakeCloud, llm: OpenAIChat) -> Sample:
    started = time.monotonic()
    async with contextlib.aclosing(llm.stream([Message("user", "hi")], [])) as events:
        await anext(events)
        got = time.monotonic()
        async for _ in events:
            pass
    server_at = max(e.at for e in cloud.openai.journal.of("first_token") if e.at <= got)
    return got - server_at, got - started


async def tts_once(cloud: FakeCloud, tts: ElevenLabsHttpTTS | ElevenLabsWsTTS) -> Sample:
    started = time.monotonic()
    async with contextlib.aclosing(tts.synthesize(_one_clause("Hello, how can I help you today?"))) as out:
        await anext(out)
        got = time.monotonic()
        async for _ in out:
            pass
    server_at = max(e.at for e in cloud.elevenlabs.journal.of("first_byte") if e.at <= got)
    return got - server_at, got - started


async def measure(n: int, concurrency: int, once: Callable[[], Awaitable[Sample]]) -> dict[str, float]:
    samples: list[Sample] = []
    for _ in range(max(1, n // concurrency)):
        samples += await asyncio.gather(*(once() for _ in range(concurrency)))
    over = sorted(s[0] * 1000 for s in samples)
    req = sorted(s[1] * 1000 for s in samples)

    def pct(xs: list[float], q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)

    return {
        "samples": len(samples),
        "overhead_ms_p50": round(statistics.median(over), 3),
        "overhead_ms_p95": pct(over, 0.95),
        "request_ms_p50": round(statistics.median(req), 3),
        "request_ms_p95": pct(req, 0.95),
    }


async def main(n: int, levels: list[int]) -> dict[str, object]:
    result: dict[str, object] = {}
    async with FakeCloud() as cloud:
        url = cloud.http_url
        stt = DeepgramSTT(api_key=DEEPGRAM_KEY, url=url)
        llm = OpenAIChat(api_key=OPENAI_KEY, model="gpt-4o", base_url=f"{url}/v1")
        http = ElevenLabsHttpTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=url)
        ws = ElevenLabsWsTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=url)
        await http.warmup()
        await ws.warmup()
        cases: dict[str, Callable[[], Awaitable[Sample]]] = {
            "deepgram_final": lambda: stt_once(cloud, stt),
            "openai_first_token": lambda: llm_once(cloud, llm),
            "elevenlabs_http_first_audio": lambda: tts_once(cloud, http),
            "elevenlabs_ws_first_audio": lambda: tts_once(cloud, ws),
        }
        for name, once in cases.items():
            await once()  # warm caches and connections
            result[name] = {f"concurrency_{c}": await measure(n, c, once) for c in levels}
        await llm.aclose()
        await http.aclose()
        await ws.aclose()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="samples per provider and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    out = asyncio.run(main(args.n, args.concurrency))
    out["note"] = (
        "overhead: fake's write -> provider yields (SDK + loopback + bridge code); "
        "request: provider entry -> first item, fakes at zero latency; 2-core box"
    )
    print(json.dumps(out, indent=2))
