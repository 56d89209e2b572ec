"""CPU time the bridge spends sending caller audio to a cloud STT, per 20 ms of audio: the STT
client (Deepgram v1 or Flux) on its socket to the fake in a child process, fed espeak speech
and silence in chunks of ``--chunk-ms`` (20: a message per frame, as before stt.send_chunk_ms),
with the replies read. CPU time of this process only (the fake is another process), so the
figure holds on a busy machine better than wall-clock latency does.

    .venv/bin/python bench/stt_send_cost.py --stt deepgram-flux deepgram --chunk-ms 20 80

To compare with another checkout, copy this file into its bench/ and run it there (it imports
the ``bridge`` package beside it). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bridge.audio.wavfile import read_wav_8k_mono
from bridge.providers.stt.deepgram_stt import DeepgramSTT
from bridge.providers.stt.flux_stt import FluxSTT
from devkit.fakes.server import DEEPGRAM_KEY

FRAME = 320  # 20 ms of 8 kHz s16le


def serve_fakes(conn: Connection) -> None:
    from devkit.fakes import FakeCloud

    async def main() -> None:
        async with FakeCloud() as cloud:
            cloud.deepgram.final_delay_s = 0.0
            loop = asyncio.get_running_loop()

            def keep_scripted() -> None:
                for script in (cloud.deepgram.script, cloud.flux.script):
                    while len(script) < 1000:
                        script.append("Are you open on Saturday?")
                loop.call_later(0.5, keep_scripted)

            keep_scripted()
            conn.send(cloud.http_url)
            await loop.run_in_executor(None, _wait_closed, conn)

    asyncio.run(main())


def _wait_closed(conn: Connection) -> None:
    try:
        conn.recv()
    except EOFError:
        pass


def speech() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.wav"
        subprocess.run(["espeak-ng", "-v", "en-us+klatt", "-s", "165", "-w", str(path),
                        "Are you open on Saturday?"], check=True, capture_output=True, timeout=30)
        return read_wav_8k_mono(path)


async def one_stream(stt: Any, audio: bytes, chunk: int, pace_s: float) -> int:
    stream = await stt.open()

    async def drain() -> int:
        n = 0
        async for _ in stream.transcripts():
            n += 1
        return n

    reader = asyncio.create_task(drain())
    for i in range(0, len(audio), chunk):
        await stream.send(audio[i : i + chunk])
        await asyncio.sleep(pace_s)
    await stream.close()
    return await reader


async def measure(stt_name: str, url: str, chunk_ms: int, streams: int, audio: bytes) -> dict[str, Any]:
    if stt_name == "deepgram":
        stt: Any = DeepgramSTT(api_key=DEEPGRAM_KEY, url=url)
    else:
        stt = FluxSTT(api_key=DEEPGRAM_KEY, url=url, eager_eot_threshold=0.5)
    chunk = chunk_ms // 20 * FRAME
    # paced at 4x real time: the socket sees a live-like flow, the run stays short
    pace = chunk_ms / 1000 / 4
    cpu = time.process_time()
    results = await asyncio.gather(*(one_stream(stt, audio, chunk, pace) for _ in range(streams)))
    cpu = time.process_time() - cpu
    frames = streams * len(audio) // FRAME
    return {"stt": stt_name, "chunk_ms": chunk_ms, "streams": streams, "frames": frames,
            "transcripts": sum(results), "cpu_us_per_frame": round(cpu * 1e6 / frames, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stt", nargs="+", default=["deepgram-flux", "deepgram"],
                        choices=["deepgram-flux", "deepgram"])
    parser.add_argument("--chunk-ms", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="caller audio per stream")
    args = parser.parse_args()
    said = speech()
    turn = said + bytes(16 * 700)  # the question, then 700 ms of silence
    size = int(args.seconds * 16000) // FRAME * FRAME
    audio = (turn * (size // len(turn) + 1))[:size]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    fakes = ctx.Process(target=serve_fakes, args=(child,), daemon=True)
    fakes.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the fakes did not start")
        url = parent.recv()
        out = [asyncio.run(measure(s, url, c, args.streams, audio)) for s in args.stt for c in args.chunk_ms]
    finally:
        parent.close()
        fakes.join(10)
        if fakes.is_alive():
            fakes.terminate()
    print(json.dumps({"seconds_per_stream": args.seconds, "results": out}, indent=2))


if __name__ == "__main__":
    main()
