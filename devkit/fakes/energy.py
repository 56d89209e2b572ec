"""What the Deepgram fakes (v1 live and Flux) share about the received audio and the socket:
an energy "recogniser" that cuts audio into BLOCK_MS blocks, each voiced when louder than
VOICE_RMS, and the documented idle close (no data for 10 s: close 1011 NET-0001)."""

from __future__ import annotations

import asyncio

import numpy as np
from aiohttp import WSMessage, web

from bridge.audio.g711 import ulaw_to_pcm
from devkit.fakes.control import Journal

BLOCK_MS = 10
VOICE_RMS = 500.0  # a block louder than this is "speech"


class EnergyBlocks:
    """Received audio (mu-law or 16-bit PCM) -> one voiced/unvoiced verdict per whole block."""

    def __init__(self, rate: int, encoding: str) -> None:
        self.block = rate * BLOCK_MS // 1000  # samples per block
        self.mulaw = encoding == "mulaw"
        self.pending = np.zeros(0, dtype=np.int16)

    def feed(self, data: bytes) -> list[bool]:
        if self.mulaw:
            data = ulaw_to_pcm(data)
        self.pending = np.concatenate([self.pending, np.frombuffer(data[: len(data) & ~1], dtype="<i2")])
        verdicts = []
        while len(self.pending) >= self.block:
            block, self.pending = self.pending[: self.block], self.pending[self.block :]
            verdicts.append(float(np.sqrt(np.mean(block.astype(np.float64) ** 2))) > VOICE_RMS)
        return verdicts


async def receive_or_idle_close(
    ws: web.WebSocketResponse, idle_timeout_s: float, journal: Journal
) -> WSMessage | None:
    """The client's next message; None after closing an idle socket 1011 NET-0001."""
    try:
        return await asyncio.wait_for(ws.receive(), idle_timeout_s)
    except TimeoutError:
        journal.add("idle_closed")
        await ws.close(code=1011, message=b"NET-0001")
        return None
