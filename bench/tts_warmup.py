"""What a warm TTS connection saves on a call's first reply, against the local ElevenLabs fake.

Each trial builds a NEW provider (as the first turn of a call after the pool and the spare
socket went stale: httpx drops idle connections after 120 s, the WS spare is replaced after
50 s) and times one clause from ``synthesize`` to the first audio chunk, either cold or after
``warmup()`` (what ``tts.warmup_on_call`` does when the call starts). The fake answers its
first byte after 120 ms (bench/voice_to_voice.py's realistic profile).

Between the client and the fake sits a relay that adds ``--rtt-ms`` of network: a new TCP
connection waits one RTT (the SYN/SYN-ACK a real handshake costs) and every chunk half an RTT
each way. TLS is not modelled: in production a cold connection pays one more RTT (TLS 1.3).

    python bench/tts_warmup.py --rtt-ms 0 40 --n 15

``--answer-ms`` (a list) times the GREETING instead: the call is offered (SIP INVITE, stream
start), answered ``--answer-ms`` later (the 200 OK's round trip to the carrier, plus any
``sip.answer_delay_ms`` of ringing), and the greeting's clause is synthesised at the answer.
Three cases, each on a new provider: no warm-up; the warm-up started with the conversation
(at the answer, concurrently with the greeting); the warm-up started at the offer. Timed from
the answer to the greeting's first audio. ``--pool warm``: the provider served a call just
before, its connection is still open (a busy daemon).

    python bench/tts_warmup.py --rtt-ms 20 40 80 --answer-ms 0 20 50 100 300 --n 15
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
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devkit/ is not installed

from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS
from bridge.providers.tts.elevenlabs_ws import ElevenLabsWsTTS
from bridge.providers.tts.warm import warm_on_call
from devkit.fakes import FakeCloud
from devkit.fakes.server import ELEVENLABS_KEY

warnings.filterwarnings("ignore", category=DeprecationWarning)

TTS_FIRST_BYTE_S = 0.120  # bench/voice_to_voice.py PROFILE["tts_first_byte_s"]


class Relay:
    """A TCP relay to ``port`` with a fixed one-way delay on everything it forwards."""

    def __init__(self, port: int, rtt_s: float) -> None:
        self._port, self._rtt = port, rtt_s
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self._rtt)  # the TCP handshake's round trip
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self._port)
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer), return_exceptions=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await asyncio.sleep(self._rtt / 2)  # in order: one chunk at a time
                dst.write(data)
                await dst.drain()
        finally:
            with contextlib.suppress(OSError):
                dst.close()


async def _clause() -> AsyncIterator[str]:
    yield "Sure!"


async def first_audio_s(tts: ElevenLabsHttpTTS | ElevenLabsWsTTS) -> float:
    started = time.monotonic()
    async with contextlib.aclosing(tts.synthesize(_clause())) as out:
        await anext(out)
        got = time.monotonic()
        async for _ in out:
            pass
    return got - started


def new_tts(kind: str, url: str) -> ElevenLabsHttpTTS | ElevenLabsWsTTS:
    return ElevenLabsHttpTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=url) if kind == "elevenlabs" \
        else ElevenLabsWsTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=url)


async def greeting_trial(kind: str, url: str, warm_at: str, answer_s: float, pool: str) -> float:
    """Offer, answer ``answer_s`` later, greeting at the answer: seconds to its first audio.
    ``pool`` "warm": the provider served a call just before (its connection is open)."""
    tts = new_tts(kind, url)
    try:
        if pool == "warm":
            await first_audio_s(tts)
        if warm_at == "offer":
            warm_on_call([tts], True)
        await asyncio.sleep(answer_s)
        if warm_at == "answer":  # as the conversation's start did: a task, then the greeting
            warm_on_call([tts], True)
        return await first_audio_s(tts)
    finally:
        await asyncio.sleep(0.3)  # let a warm-up still running finish before closing
        await tts.aclose()


async def trial(kind: str, url: str, warm: bool) -> float:
    tts = new_tts(kind, url)
    try:
        if warm:
            await tts.warmup()
        return await first_audio_s(tts)
    finally:
        await tts.aclose()


async def behind_relays(rtts_ms: list[float]) -> AsyncIterator[tuple[float, str]]:
    """(rtt, url): the fake ElevenLabs behind a relay with each RTT in turn."""
    async with FakeCloud() as cloud:
        cloud.elevenlabs.faults.first_byte_delay_s = TTS_FIRST_BYTE_S
        cloud.elevenlabs.ws_faults.first_byte_delay_s = TTS_FIRST_BYTE_S
        port = int(cloud.http_url.rsplit(":", 1)[1].split("/")[0])
        for rtt in rtts_ms:
            async with Relay(port, rtt / 1000) as relay:
                yield rtt, f"http://127.0.0.1:{relay.port}"


def stats(times: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(times), 1), "max": round(max(times), 1)}


async def greeting(rtts_ms: list[float], answers_ms: list[float], pools: list[str],
                   n: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    async for rtt, url in behind_relays(rtts_ms):
        for kind in ("elevenlabs", "elevenlabs-ws"):
            for pool, answer in [(p, a) for p in pools for a in answers_ms]:
                row: dict[str, object] = {"tts": kind, "rtt_ms": rtt, "pool": pool, "answer_ms": answer}
                for warm_at in ("none", "answer", "offer"):
                    row[f"warm_at_{warm_at}"] = stats([
                        1000 * await greeting_trial(kind, url, warm_at, answer / 1000, pool)
                        for _ in range(n)])
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


async def main(rtts_ms: list[float], n: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    async for rtt, url in behind_relays(rtts_ms):
        for kind in ("elevenlabs", "elevenlabs-ws"):
            row: dict[str, object] = {"tts": kind, "rtt_ms": rtt}
            for warm in (False, True):
                times = [1000 * await trial(kind, url, warm) for _ in range(n)]
                row["warm" if warm else "cold"] = stats(times)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 40.0])
    parser.add_argument("--n", type=int, default=15, help="trials per case")
    parser.add_argument("--answer-ms", type=float, nargs="+",
                        help="time the greeting instead, answered this long after the offer")
    parser.add_argument("--pool", nargs="+", default=["cold", "warm"], choices=["cold", "warm"],
                        help="with --answer-ms: a new provider (cold) or one that just served a call")
    args = parser.parse_args()
    if args.answer_ms:
        asyncio.run(greeting(args.rtt_ms, args.answer_ms, args.pool, args.n))
    else:
        asyncio.run(main(args.rtt_ms, args.n))
