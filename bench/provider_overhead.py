"""Bridge-side overhead of each cloud provider, measured against the local fakes.

For each provider the fake journals (time.monotonic, same process) the moment it writes the
message that matters -- Deepgram's final Results, OpenAI's first token, ElevenLabs' first
audio bytes -- and the bench takes the moment the bridge's provider hands the corresponding
Transcript / TextDelta / AudioChunk to its caller. The difference is what the SDK, the
loopback socket and our code add. ``request_ms`` is the whole call from the provider's entry
point to the first item with zero fake latency (includes HTTP request/handshake work).

``--cpu`` measures instead the CPU time the bridge's process spends per reply in each LLM and
TTS client (``time.process_time`` around a batch of whole replies, divided by the replies),
with the fakes in a child process so that their CPU is not counted: the A/B measure for the
clients' cost on a shared box, where wall-clock latency is noisy. Each reply is what a turn
asks of the client: the OpenAI stream of a 14-word answer read to its end (a system prompt
and two turns of history), and the three clauses of that answer spoken by the ElevenLabs
WebSocket and HTTP clients; the fakes run the realistic profile (first token 350 ms, 20 ms a
token, TTS first byte 120 ms). ``new_connections_per_reply`` is what the fakes saw: TCP
connections opened per reply (the WebSocket API needs one per utterance).

Usage: .venv/bin/python bench/provider_overhead.py [--n 40] [--concurrency 1 20]
       .venv/bin/python bench/provider_overhead.py --cpu [--replies 300] [--concurrency 50]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import statistics
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

# devkit/ is not installed: run from the checkout (as the other benches do).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bridge.providers.base import Message, ToolSpec
from bridge.providers.llm.openai_chat import OpenAIChat
from bridge.providers.stt.deepgram_stt import DeepgramSTT
from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS
from bridge.providers.tts.elevenlabs_multi import ElevenLabsMultiTTS
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


# -- --cpu: CPU time per reply, fakes in a child process ------------------------------------------
ANSWER = "Sure! We are open from nine to six on weekdays. Is there anything else?"
CLAUSES = ("Sure!", "We are open from nine to six on weekdays.", "Is there anything else?")
HISTORY = [
    Message("system", "You are the phone agent of a small shop. Answer in one or two short sentences."),
    Message("user", "Hello, is this the shop?"),
    Message("assistant", "Yes, this is the shop. How can I help you?"),
    Message("user", "When are you open?"),
]
TOOLS = [ToolSpec("end_call", "Hang up when the caller says goodbye.", {"type": "object", "properties": {}})]


def serve_fakes(conn: Connection) -> None:
    """Child process: FakeCloud on the realistic profile; answers "stats" with what it saw."""

    async def run() -> None:
        async with FakeCloud() as cloud:
            cloud.openai.faults.first_byte_delay_s = 0.330  # chunk 0 carries only the role
            cloud.openai.faults.chunk_delay_s = 0.020
            cloud.elevenlabs.faults.first_byte_delay_s = 0.120
            cloud.elevenlabs.ws_faults.first_byte_delay_s = 0.120
            loop = asyncio.get_running_loop()

            def keep_scripted() -> None:
                while len(cloud.openai.script) < 1000:
                    cloud.openai.script.append(ANSWER)
                loop.call_later(0.5, keep_scripted)

            keep_scripted()
            conn.send(cloud.http_url)
            known: set[object] = set()  # client ports seen so far: a new one is a new connection
            while await loop.run_in_executor(None, _recv, conn) == "stats":
                journals = (cloud.openai.journal, cloud.elevenlabs.journal)
                peers = [e.data.get("peer") for j in journals for e in j.of("request") + j.of("warmup")]
                conn.send({"requests": sum(j.count("request") for j in journals),
                           "new_connections": len(set(peers) - known)})
                known.update(peers)
                for journal in journals:
                    journal.clear()

    asyncio.run(run())


def _recv(conn: Connection) -> object:
    try:
        return conn.recv()
    except EOFError:
        return None


async def _clauses() -> AsyncIterator[str]:
    for clause in CLAUSES:
        yield clause


async def llm_reply(llm: OpenAIChat) -> None:
    async with contextlib.aclosing(llm.stream(HISTORY, TOOLS)) as events:
        async for _ in events:
            pass


async def tts_reply(tts: ElevenLabsHttpTTS | ElevenLabsWsTTS | ElevenLabsMultiTTS) -> None:
    async with contextlib.aclosing(tts.synthesize(_clauses())) as out:
        async for _ in out:
            pass


async def cpu_case(conn: Connection, replies: int, concurrency: int,
                   once: Callable[[], Awaitable[None]]) -> dict[str, float]:
    await asyncio.gather(*(once() for _ in range(concurrency)))  # warm: pools, imports, caches
    conn.send("stats")
    conn.recv()  # reset the fakes' journals
    rounds = max(1, replies // concurrency)
    cpu, wall = time.process_time(), time.monotonic()
    for _ in range(rounds):
        await asyncio.gather(*(once() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    conn.send("stats")
    seen = conn.recv()
    assert isinstance(seen, dict)
    n = rounds * concurrency
    return {"replies": n, "cpu_ms_per_reply": round(cpu / n * 1000, 3),
            "wall_s": round(wall, 2), "cores_busy": round(cpu / wall, 3),
            "requests_per_reply": round(seen["requests"] / n, 3),
            "new_connections_per_reply": round(seen["new_connections"] / n, 3)}


async def cpu_main(conn: Connection, url: str, replies: int, concurrency: int,
                   cases: list[str]) -> dict[str, object]:
    llm = OpenAIChat(api_key=OPENAI_KEY, model="gpt-4o", base_url=f"{url}/v1")
    http = ElevenLabsHttpTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=url)
    ws = ElevenLabsWsTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=url)
    multi = ElevenLabsMultiTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=url)
    every: dict[str, Callable[[], Awaitable[None]]] = {
        "openai_reply": lambda: llm_reply(llm),
        "elevenlabs_ws_reply": lambda: tts_reply(ws),
        "elevenlabs_multi_reply": lambda: tts_reply(multi),
        "elevenlabs_http_reply": lambda: tts_reply(http),
    }
    result: dict[str, object] = {}
    try:
        for name in cases:
            result[name] = await cpu_case(conn, replies, concurrency, every[name])
    finally:
        await llm.aclose()
        await http.aclose()
        await ws.aclose()
        await multi.aclose()
    return result


def cpu_run(replies: int, concurrency: int, cases: list[str]) -> dict[str, object]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    fakes = ctx.Process(target=serve_fakes, args=(child,), daemon=True)
    fakes.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the fakes did not start")
        url = parent.recv()
        return asyncio.run(cpu_main(parent, url, replies, concurrency, cases))
    finally:
        parent.close()
        fakes.join(10)
        if fakes.is_alive():
            fakes.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="samples per provider and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None,
                        help="default: 1 20; with --cpu: one level, 50")
    parser.add_argument("--cpu", action="store_true", help="CPU time per reply of the LLM and TTS clients")
    parser.add_argument("--replies", type=int, default=300, help="--cpu: replies per client")
    cases = ["openai_reply", "elevenlabs_ws_reply", "elevenlabs_multi_reply", "elevenlabs_http_reply"]
    parser.add_argument("--cases", nargs="+", default=cases, choices=cases, help="--cpu: clients to measure")
    args = parser.parse_args()
    if args.cpu:
        level = (args.concurrency or [50])[0]
        cpu_out = cpu_run(args.replies, level, args.cases)
        cpu_out["concurrency"] = level
        cpu_out["note"] = ("cpu_ms_per_reply: the bridge process's CPU time (all threads) over whole "
                           "replies, fakes in a child process, realistic profile; 2-core shared box")
        print(json.dumps(cpu_out, indent=2))
        raise SystemExit(0)
    args.concurrency = args.concurrency or [1, 20]
    out = asyncio.run(main(args.n, args.concurrency))
    out["note"] = (
        "overhead: fake's write -> provider yields (SDK + loopback + bridge code); "
        "request: provider entry -> first item, fakes at zero latency; 2-core box"
    )
    print(json.dumps(out, indent=2))
