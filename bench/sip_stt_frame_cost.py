"""CPU time per caller frame from an RTP PCMU payload to the bytes Deepgram is sent; prints JSON.

    .venv/bin/python bench/sip_stt_frame_cost.py [--frames 40000] [--repeats 5]

Both ways the SIP conversation path can take, in one process, one after the other: ``plain``
decodes the payload to PCM (codec.DECODERS, what the RTP leg did before) and Deepgram's
client encodes the chunk to mu-law again; ``keeping`` decodes with codec.decode_ulaw_keeping
(the frame keeps its payload, as the leg now does in listen mode) and the client sends the
payload bytes. Between them the engine's real SttFeed (``stt.send_chunk_ms`` chunks) and the
real DeepgramStream.send (encoding=mulaw, no socket: the audio goes to its replay buffer).
No jitter buffer, VAD or socket: only the work that differs. CPU time (``process_time``), the
best of ``--repeats`` runs of each, so a busy shared box moves it little.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bridge.conversation.stt_feed import SttFeed
from bridge.media.codec import DECODERS, decode_ulaw_keeping
from bridge.providers.stt.deepgram_stt import DeepgramStream, DeepgramSTT
from bridge.settings.providers import SttSettings


async def run(decode: Callable[[bytes], bytes], payloads: list[bytes], frames: int, chunk_ms: int) -> float:
    stream = DeepgramStream(DeepgramSTT(api_key="bench", encoding="mulaw"))
    feed = SttFeed(chunk_ms)
    n = len(payloads)
    t0 = time.process_time()
    for i in range(frames):
        if feed.audio(decode(payloads[i % n])):
            for pcm, _final in feed.take():
                await stream.send(pcm)
    return (time.process_time() - t0) / frames * 1e6


async def main_async(frames: int, repeats: int) -> dict[str, object]:
    chunk_ms = SttSettings().send_chunk_ms
    # varied payloads, every code (two zeros among them), 160 bytes a frame
    payloads = [bytes((i * 37 + j * 11) & 0xFF for j in range(160)) for i in range(64)]
    gc.freeze()
    ways: dict[str, Callable[[bytes], bytes]] = {"plain": DECODERS[0], "keeping": decode_ulaw_keeping}
    best: dict[str, float] = {}
    for _ in range(repeats):  # alternate, so a change of load falls on both
        for name, decode in ways.items():
            us = await run(decode, payloads, frames, chunk_ms)
            best[name] = min(best.get(name, us), us)
    return {
        "frames": frames,
        "chunk_ms": chunk_ms,
        "us_per_frame_plain": round(best["plain"], 3),
        "us_per_frame_keeping": round(best["keeping"], 3),
        "saved_pct": round(100 * (1 - best["keeping"] / best["plain"]), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(args.frames, args.repeats))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
