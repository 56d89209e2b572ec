"""A StreamServer on 127.0.0.1:0 with a chosen agent, a recording agent and the start of a
stream on a raw socket, and audio helpers."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from websockets.asyncio.client import connect

from bridge.admission import Admission
from bridge.callfacts import encode_headers
from bridge.callfacts import stream_token as expected_token
from bridge.callmodel import CallInfo
from bridge.leg import AudioFrame, AudioLeg, DtmfDigit, LegEnded
from bridge.settings import Secrets, Settings
from bridge.simulator.plivo.signing import sign_v3
from bridge.simulator.plivo.stream_client import PlivoStreamClient
from bridge.stream.server import StreamServer
from bridge.supervisor import AgentRunner as Agent
from bridge.supervisor import CallSupervisor

SECRET = "test-stream-secret"
AUTH_TOKEN = "dGVzdC1wbGl2by1hdXRoLXRva2Vu"  # PLIVO_AUTH_TOKEN: the simulator signs upgrades with it


def settings(listen: str = "127.0.0.1:0", **plivo: Any) -> Settings:
    return Settings.model_validate({"daemon": {"stream_listen": listen},
                                    "plivo": {"nonce_db": ":memory:", **plivo}})


@contextlib.asynccontextmanager
async def running_server(
    agent: Agent, listen: str = "127.0.0.1:0", **plivo: Any
) -> AsyncIterator[StreamServer]:
    server = StreamServer(settings(listen, **plivo),
                          Secrets(stream_secret=SECRET, plivo_auth_token=AUTH_TOKEN), supervisor(agent))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(drain_timeout_s=5.0)


def supervisor(agent: Agent, max_calls: int = 50) -> CallSupervisor:
    """The call supervisor a daemon would give the stream server (its own capacity here)."""
    return CallSupervisor(agent, Admission(max_calls))


def url(server: StreamServer) -> str:
    return f"ws://127.0.0.1:{server.bound_port}/stream"


def sim_client(server: StreamServer, **kwargs: Any) -> PlivoStreamClient:
    """Plivo's side of a stream to ``server``: upgrade signed, network latency and jitter on."""
    return PlivoStreamClient(url(server), auth_token=AUTH_TOKEN, **kwargs)


def signed_connect(server: StreamServer) -> connect:
    """A raw WebSocket to ``server`` with the upgrade signed as Plivo signs it (fresh nonce)."""
    address = f"127.0.0.1:{server.bound_port}"
    return connect(url(server), additional_headers=sign_v3(AUTH_TOKEN, "GET", f"https://{address}/stream"))


def headers_for(call_uuid: str, **extra: str) -> str:
    """extraHeaders as the XML server writes them: the facts, %-encoded, and the token over them."""
    text = encode_headers({**extra, "Token": expected_token(SECRET, call_uuid, extra)})
    return text


class Recorder:
    """An agent that keeps what its leg delivered: the leg and its socket (``_ws``), the audio
    frames, the DTMF digits and the end reason, in order. ``read=False``: it reads no event
    (an agent busy elsewhere) and only waits for the leg to finish."""

    def __init__(self, *, read: bool = True) -> None:
        self.read = read
        self.legs: list[AudioLeg] = []
        self.sockets: list[object] = []
        self.frames: list[bytes] = []
        self.digits: list[str] = []
        self.ended: list[str] = []

    async def __call__(self, leg: AudioLeg, info: CallInfo) -> None:
        self.sockets.append(getattr(leg, "_ws", None))
        self.legs.append(leg)
        if not self.read:
            await leg.finished()
            return
        async for ev in leg.events():
            if isinstance(ev, AudioFrame):
                self.frames.append(bytes(ev.pcm))
            elif isinstance(ev, DtmfDigit):
                self.digits.append(ev.digit)
            elif isinstance(ev, LegEnded):
                self.ended.append(ev.reason)

    async def until_ended(self) -> None:
        """Until the leg ended (bounded: 10 s on a slow machine)."""
        for _ in range(500):
            if self.ended:
                return
            await asyncio.sleep(0.02)


    async def until_socket(self) -> None:
        """Until the agent holds the call's socket (bounded: 5 s)."""
        for _ in range(250):
            if self.sockets:
                return
            await asyncio.sleep(0.02)


async def start_stream(ws: Any, sim: PlivoStreamClient, agent: Recorder) -> None:
    """Plivo's start message on ``ws``, then until the agent holds the call's socket."""
    await ws.send(sim.start_message())
    await agent.until_socket()


async def start_cutting(ws: Any, sim: PlivoStreamClient, agent: Recorder) -> None:
    """``start_stream``, then one media message (after it the socket cuts frames itself) and
    a ping answered after it."""
    await start_stream(ws, sim, agent)
    await ws.send(sim.media_message(tone(20), 1))
    pong = await ws.ping(b"sync")
    await asyncio.wait_for(pong, 10)


def tone(ms: int, freq: float = 440.0, amp: int = 8000, phase: float = 0.3) -> bytes:
    """A sine; the phase keeps every sample of the default 440 Hz tone away from exact zero,
    so ``without_underruns`` can tell a playout gap from the tone itself."""
    n = 8 * ms
    t = np.arange(n) / 8000
    return (amp * np.sin(2 * math.pi * freq * t + phase)).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    a = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


def without_underruns(pcm: np.ndarray, min_run: int = 4) -> np.ndarray:
    """``pcm`` less the runs of exact digital zero the simulated caller's playout writes when
    its buffer runs dry (a loaded machine delays a chunk: a gap, not a wrong sample). Decoded
    speech or tones never hold ``min_run`` exact zeros in a row, so what is left is the audio
    that was played, in order, for the correlation to judge."""
    zero = pcm == 0
    if not zero.any():
        return pcm
    # length of the zero run each sample belongs to
    edges = np.flatnonzero(np.diff(np.concatenate(([0], zero.astype(np.int8), [0]))))
    keep = np.ones(len(pcm), dtype=bool)
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start >= min_run:
            keep[start:end] = False
    return pcm[keep]


def best_correlation(sent: bytes, heard: bytes) -> tuple[float, int]:
    """Max normalised cross-correlation of ``sent`` within ``heard`` and its lag (samples):
    searched every 8 samples, then sample by sample around the best (network delays put the
    echo at any offset, and a few samples off halves the correlation of a 440 Hz tone). Playout
    underruns (silence the caller's buffer inserted while a chunk was late) are left out first:
    the test judges what came back, pacing has tests of its own."""
    x = np.frombuffer(sent, dtype="<i2").astype(np.float64)
    y = without_underruns(np.frombuffer(heard, dtype="<i2")).astype(np.float64)

    def corr(k: int) -> float:
        seg = y[k : k + len(x)]
        denom = np.linalg.norm(x) * np.linalg.norm(seg)
        return float(np.dot(x, seg) / denom) if denom and len(seg) == len(x) else 0.0

    last = len(y) - len(x)
    best, lag = 0.0, 0
    for k in range(0, last + 1, 8):
        c = corr(k)
        if c > best:
            best, lag = c, k
    for k in range(max(0, lag - 7), min(last, lag + 7) + 1):
        c = corr(k)
        if c > best:
            best, lag = c, k
    return best, lag
