"""A caller who goes quiet after a turn is not a stalled Deepgram socket.

The engine sends audio only while the caller talks, in real time. The last frames of a turn
(silence after the final) are owed no reply, so they must not arm the stall watchdog; seen in
the full SIP call as a spurious "no reply for 6 s" reconnect after turns."""

from __future__ import annotations

import asyncio
import warnings

import numpy as np

from bridge.providers.stt.deepgram_stt import DeepgramSTT
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY

warnings.filterwarnings("ignore", category=DeprecationWarning)

STALL_S = 0.5


def speech(ms: int) -> bytes:
    t = np.arange(ms * 8) / 8000
    return (6000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def test_no_stall_reconnect_while_the_caller_is_quiet() -> None:
    async with FakeCloud() as cloud:
        cloud.deepgram.script.extend(["one", "two"])
        stt = DeepgramSTT(api_key=DEEPGRAM_KEY, url=cloud.http_url, stall_timeout_s=STALL_S, keepalive_s=1.0)
        stream = await stt.open()
        try:
            for expected in ("one", "two"):
                audio = speech(300) + bytes(400 * 16)  # a word, then the endpointing silence
                for i in range(0, len(audio), 320):  # 20 ms frames in real time, as on a call
                    await stream.send(audio[i : i + 320])
                    await asyncio.sleep(0.02)
                async with asyncio.timeout(3):
                    async for t in stream.transcripts():
                        if t.end_of_utterance and t.text:
                            break
                assert t.text == expected
                await asyncio.sleep(STALL_S * 3)  # the caller says nothing for a while
            assert stream.reconnects == 0
            assert cloud.deepgram.journal.count("request") == 1
        finally:
            await stream.close()
