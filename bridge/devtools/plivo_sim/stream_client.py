"""Plivo's side of an audio stream: connect, send start, stream the caller's audio as media at
real time, and play what the bridge sends like Plivo does: playAudio is buffered and played
out at real time, checkpoint -> playedStream once the audio before it has played, clearAudio
drops the buffer -> clearedAudio. The audio the caller heard is kept as a timeline.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.audio.g711 import pcm_to_ulaw, ulaw_to_pcm

FRAME_S = 0.02
FRAME_BYTES = 320  # 20 ms of s16le at 8 kHz
Printer = Callable[[str], None]


@dataclass
class StreamCallResult:
    heard: bytes  # what the caller heard, s16le 8 kHz, one 20 ms frame per tick (silence if none)
    agent_audio_ms: int  # of it, audio the bridge actually sent (not silence)
    first_audio_tick: int | None  # tick index of the first agent audio heard
    received: Counter[str] = field(default_factory=Counter)  # message events from the bridge
    played_checkpoints: list[str] = field(default_factory=list)
    clears: int = 0
    clear_ticks: list[int] = field(default_factory=list)
    clear_audio_ms: list[int] = field(default_factory=list)  # agent audio heard when each clear came
    ended_by: str = ""  # "caller" | "bridge"
    close_code: int | None = None
    close_reason: str = ""
    bad_messages: int = 0


@dataclass
class _Buffer:
    """Plivo's playback buffer: audio and checkpoint marks in arrival order."""

    items: deque[tuple[str, Any]] = field(default_factory=deque)

    def audio(self, pcm: bytes) -> None:
        self.items.append(("audio", bytearray(pcm)))

    def mark(self, name: str) -> None:
        self.items.append(("mark", name))

    def take_frame(self) -> tuple[bytes, int, list[str]]:
        """One tick: (frame, real audio bytes in it, marks passed)."""
        out = bytearray()
        marks: list[str] = []
        while self.items and (len(out) < FRAME_BYTES or self.items[0][0] == "mark"):
            kind, value = self.items[0]
            if kind == "mark":
                marks.append(value)
                self.items.popleft()
                continue
            need = FRAME_BYTES - len(out)
            out += value[:need]
            del value[:need]
            if not value:
                self.items.popleft()
        real = len(out)
        return bytes(out) + bytes(FRAME_BYTES - real), real, marks

    def clear(self) -> None:
        self.items.clear()


class PlivoStreamClient:
    def __init__(
        self,
        url: str,
        *,
        call_uuid: str | None = None,
        extra_headers: str = "",
        encoding: str = "audio/x-mulaw",
        printer: Printer | None = None,
        open_timeout: float = 10.0,
        latency_s: float = 0.0,
    ) -> None:
        if encoding not in ("audio/x-mulaw", "audio/x-l16"):
            raise ValueError(f"unsupported encoding {encoding!r}")
        self.url = url
        self.call_uuid = call_uuid or str(uuid.uuid4())
        self.stream_id = str(uuid.uuid4())
        self.extra_headers = extra_headers
        self.encoding = encoding
        self._print = printer or (lambda _line: None)
        self._open_timeout = open_timeout
        self._seq = 0
        self._buffer = _Buffer()
        self._pending_dtmf: deque[str] = deque()
        self.tick = 0  # the current 20 ms tick of the call
        # One-way network delay, each direction: messages to the bridge leave this much later,
        # messages from it are acted on this much later (order kept).
        self.latency_s = latency_s
        self._outq: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._inq: asyncio.Queue[tuple[float, str | bytes]] = asyncio.Queue()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _encode(self, pcm: bytes) -> bytes:
        return pcm_to_ulaw(pcm) if self.encoding == "audio/x-mulaw" else pcm

    def _decode(self, payload: bytes) -> bytes:
        return ulaw_to_pcm(payload) if self.encoding == "audio/x-mulaw" else payload[: len(payload) & ~1]

    def start_message(self) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "start": {
                    "callId": self.call_uuid,
                    "streamId": self.stream_id,
                    "accountId": "MA0000000000000000SIM",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": self.encoding, "sampleRate": 8000},
                },
                "extra_headers": self.extra_headers,
            }
        )

    def media_message(self, pcm: bytes, chunk: int) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next_seq(),
                "streamId": self.stream_id,
                "media": {
                    "track": "inbound",
                    "timestamp": str(chunk * 20),
                    "chunk": chunk,
                    "payload": base64.b64encode(self._encode(pcm)).decode("ascii"),
                },
            }
        )

    def press(self, digit: str) -> None:
        """Send a DTMF event on the next tick."""
        self._pending_dtmf.append(digit)

    async def run(
        self,
        caller_pcm: bytes,
        *,
        tail_s: float = 1.0,
        max_s: float = 60.0,
        on_tick: Callable[[PlivoStreamClient, int], None] | None = None,
    ) -> StreamCallResult:
        """Stream ``caller_pcm`` then ``tail_s`` of silence, then hang up (close), unless the
        bridge ends the call first; never longer than ``max_s``."""
        result = StreamCallResult(heard=b"", agent_audio_ms=0, first_audio_tick=None)
        heard = bytearray()
        async with connect(self.url, open_timeout=self._open_timeout, compression=None,
                           max_size=2**20) as ws:
            await ws.send(self.start_message())
            self._print(f"stream open: call {self.call_uuid}")
            receiver = asyncio.create_task(self._receive(ws, result))
            delayed = [asyncio.create_task(self._delayed_out(ws)),
                       asyncio.create_task(self._delayed_in(ws, result))]
            try:
                await self._tick_loop(ws, caller_pcm, tail_s, max_s, result, heard, receiver, on_tick)
            finally:
                for task in (receiver, *delayed):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if not result.ended_by:
                result.ended_by = "caller"
                await ws.close(1000, "caller hung up")
            result.close_code = ws.close_code
            result.close_reason = ws.close_reason or ""
        result.heard = bytes(heard)
        self._print(f"stream closed by {result.ended_by}: code={result.close_code} {result.close_reason}")
        return result

    async def _tick_loop(
        self,
        ws: ClientConnection,
        caller_pcm: bytes,
        tail_s: float,
        max_s: float,
        result: StreamCallResult,
        heard: bytearray,
        receiver: asyncio.Task[None],
        on_tick: Callable[[PlivoStreamClient, int], None] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        total_ticks = int(min(len(caller_pcm) / FRAME_BYTES + tail_s / FRAME_S, max_s / FRAME_S))
        t0 = loop.time()
        for tick in range(total_ticks):
            if receiver.done():
                return
            self.tick = tick
            if on_tick is not None:
                on_tick(self, tick)
            frame = caller_pcm[tick * FRAME_BYTES : (tick + 1) * FRAME_BYTES]
            frame += bytes(FRAME_BYTES - len(frame))
            try:
                await self._send(ws, self.media_message(frame, tick + 1))
                while self._pending_dtmf:
                    digit = self._pending_dtmf.popleft()
                    await self._send(ws, json.dumps({"event": "dtmf", "sequenceNumber": self._next_seq(),
                                              "streamId": self.stream_id,
                                              "dtmf": {"digit": digit, "track": "inbound"}}))
                played, real, marks = self._buffer.take_frame()
                heard += played
                if real:
                    result.agent_audio_ms += real * 1000 // 16000
                    if result.first_audio_tick is None:
                        result.first_audio_tick = tick
                        self._print(f"agent audio starts at {tick * 20} ms")
                for name in marks:
                    result.played_checkpoints.append(name)
                    played_msg = {"event": "playedStream", "sequenceNumber": self._next_seq(),
                                  "streamId": self.stream_id, "name": name}
                    await self._send(ws, json.dumps(played_msg))
            except ConnectionClosed:
                return
            # absolute deadlines: no drift over a long call
            delay = t0 + (tick + 1) * FRAME_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _send(self, ws: ClientConnection, text: str) -> None:
        if self.latency_s <= 0:
            await ws.send(text)
        else:
            self._outq.put_nowait((asyncio.get_running_loop().time() + self.latency_s, text))

    async def _delayed_out(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionClosed):
            while True:
                due, text = await self._outq.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await ws.send(text)

    async def _delayed_in(self, ws: ClientConnection, result: StreamCallResult) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, raw = await self._inq.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._handle(ws, raw, result)

    async def _receive(self, ws: ClientConnection, result: StreamCallResult) -> None:
        try:
            async for raw in ws:
                if self.latency_s > 0:
                    self._inq.put_nowait((asyncio.get_running_loop().time() + self.latency_s, raw))
                else:
                    await self._handle(ws, raw, result)
        except ConnectionClosed:
            pass
        result.ended_by = result.ended_by or "bridge"

    async def _handle(self, ws: ClientConnection, raw: str | bytes, result: StreamCallResult) -> None:
        """One message from the bridge, acted on as Plivo does."""
        try:
            msg = json.loads(raw)
            event = msg["event"]
        except (ValueError, KeyError, TypeError):
            result.bad_messages += 1
            return
        result.received[event] += 1
        if event == "playAudio":
            media = msg.get("media") or {}
            try:
                payload = base64.b64decode(media.get("payload", ""), validate=True)
            except (binascii.Error, ValueError):
                result.bad_messages += 1
                return
            if media.get("contentType") != self.encoding or media.get("sampleRate") != 8000:
                result.bad_messages += 1
            self._buffer.audio(self._decode(payload))
        elif event == "checkpoint":
            self._buffer.mark(str(msg.get("name", "")))
        elif event == "clearAudio":
            self._buffer.clear()
            result.clears += 1
            result.clear_ticks.append(self.tick)
            result.clear_audio_ms.append(result.agent_audio_ms)
            self._print("clearAudio: playback buffer dropped")
            with contextlib.suppress(ConnectionClosed):
                await self._send(ws, json.dumps({"event": "clearedAudio", "sequenceNumber": self._next_seq(),
                                                 "streamId": self.stream_id}))
