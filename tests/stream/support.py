"""A StreamServer on 127.0.0.1:0 with a chosen agent, and audio helpers."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from bridge.callfacts import stream_token as expected_token
from bridge.settings import Secrets, Settings
from bridge.stream.server import Agent, StreamServer

SECRET = "test-stream-secret"


def settings(listen: str = "127.0.0.1:0", **plivo: Any) -> Settings:
    return Settings.model_validate({"daemon": {"stream_listen": listen}, "plivo": plivo})


@contextlib.asynccontextmanager
async def running_server(
    agent: Agent, listen: str = "127.0.0.1:0", **plivo: Any
) -> AsyncIterator[StreamServer]:
    server = StreamServer(settings(listen, **plivo), Secrets(stream_secret=SECRET), agent)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(drain_timeout_s=5.0)


def url(server: StreamServer) -> str:
    return f"ws://127.0.0.1:{server.bound_port}/stream"


def headers_for(call_uuid: str, **extra: str) -> str:
    pairs = {"Token": expected_token(SECRET, call_uuid), **extra}
    return ",".join(f"{k}={v}" for k, v in pairs.items())


def tone(ms: int, freq: float = 440.0, amp: int = 8000) -> bytes:
    n = 8 * ms
    t = np.arange(n) / 8000
    return (amp * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    a = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


def best_correlation(sent: bytes, heard: bytes) -> tuple[float, int]:
    """Max normalised cross-correlation of ``sent`` within ``heard`` and its lag (samples)."""
    x = np.frombuffer(sent, dtype="<i2").astype(np.float64)
    y = np.frombuffer(heard, dtype="<i2").astype(np.float64)
    best, lag = 0.0, 0
    for k in range(0, len(y) - len(x) + 1, 8):
        seg = y[k : k + len(x)]
        denom = np.linalg.norm(x) * np.linalg.norm(seg)
        if denom:
            c = float(np.dot(x, seg) / denom)
            if c > best:
                best, lag = c, k
    return best, lag
