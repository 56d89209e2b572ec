"""CPU time per 20 ms caller frame on the stream path's own code, for an A/B that a shared box
cannot spoil (process CPU time, not wall time): Plivo's media message parsed and decoded as
the StreamLeg does (receive side), and the frame sent by DeepgramStream.send to the fake
Deepgram, which runs in a child process so that only the client's work is counted (send side).

Usage: .venv/bin/python bench/stream_frame_cost.py [TREE]   (TREE: a checkout to measure,
default this one; e.g. main's, from `git archive`). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

FRAMES = 3000  # 60 s of caller audio


def serve_fake(conn: Connection, tree: str) -> None:
    """Child process: the fake cloud until the parent says stop."""
    sys.path.insert(0, tree)
    from devkit.fakes import FakeCloud

    async def main() -> None:
        async with FakeCloud() as cloud:
            conn.send(cloud.http_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


async def measure(url: str, frames: list[bytes]) -> tuple[float, float]:
    from bridge.providers.stt.deepgram_stt import DeepgramSTT
    from bridge.stream import protocol
    from devkit.fakes.server import DEEPGRAM_KEY

    decode = protocol.MediaFormat("audio/x-mulaw", 8000).decoder()
    messages = [json.dumps({"event": "media", "sequenceNumber": i, "streamId": "s-1",
                            "media": {"track": "inbound", "timestamp": "1733090000000", "chunk": i,
                                      "payload": base64.b64encode(f).decode()}, "extra_headers": "{}"})
                for i, f in enumerate(frames)]
    cpu = time.process_time()
    pcms = []
    for m in messages:
        msg = protocol.parse(m)
        assert isinstance(msg, protocol.Media)
        pcms.append(decode(msg.payload))
    receive = (time.process_time() - cpu) / len(frames) * 1e6
    stream = await DeepgramSTT(api_key=DEEPGRAM_KEY, url=url).open()
    await asyncio.sleep(0.2)
    cpu = time.process_time()
    for n, pcm in enumerate(pcms):
        await stream.send(pcm)
        if n % 50 == 49:
            await asyncio.sleep(0)  # the socket's own work (writes, the fake's replies) runs too
    await asyncio.sleep(0.5)
    send = (time.process_time() - cpu) / len(frames) * 1e6
    await stream.close()
    return receive, send


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    tree = str(Path(sys.argv[1]).resolve()) if len(sys.argv) > 1 else str(here)
    sys.path.insert(0, tree)
    rng = np.random.default_rng(1)
    frames = [bytes(rng.integers(0, 256, 160, dtype=np.uint8)) for _ in range(FRAMES)]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    fake = ctx.Process(target=serve_fake, args=(child, tree), daemon=True)
    fake.start()
    try:
        receive, send = asyncio.run(measure(parent.recv(), frames))
    finally:
        parent.send(None)
        fake.join(5)
    print(json.dumps({"tree": tree, "plivo_receive_us_per_frame": round(receive, 1),
                      "deepgram_send_us_per_frame": round(send, 1)}))


if __name__ == "__main__":
    main()
