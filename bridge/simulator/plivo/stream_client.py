"""Plivo's side of an audio stream: connect (the upgrade signed with X-Plivo-Signature-V3, as
Plivo's stream SDKs check it), send start, stream the caller's audio as media at real time, and
play what the bridge sends like Plivo does: playAudio is buffered and played out at real time,
checkpoint -> playedStream once the audio before it has played, clearAudio drops the buffer ->
clearedAudio, sendDTMF is recorded. Every message crosses a network path with latency and
jitter (on by default, seeded). The audio the caller heard is kept as a timeline at 8 kHz.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data

from bridge.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from bridge.audio.resample import StreamResampler, resample_all
from bridge.simulator.plivo.network import DelayedPipe, NetworkProfile
from bridge.simulator.plivo.rules import extra_headers_as_delivered
from bridge.simulator.plivo.signing import sign_v3

_FORMATS = (("audio/x-mulaw", 8000), ("audio/x-l16", 8000), ("audio/x-l16", 16000))
# Encoded media payloads by (encoding, frame): callers in one process play the same few clips
# and mostly silence, so each distinct 20 ms frame is encoded and base64'd once, not per tick
# per call (at 150 callers that was most of the callers' process). Bounded.
_PAYLOADS: dict[tuple[str, bytes], str] = {}
_PAYLOADS_MAX = 100_000
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
    dtmf_received: list[str] = field(default_factory=list)  # sendDTMF digits from the bridge
    network_rtt_ms: float = 0.0  # both one-way base delays drawn for this call (before jitter)


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
        sample_rate: int = 8000,
        printer: Printer | None = None,
        open_timeout: float = 10.0,
        auth_token: str | None = None,
        network: NetworkProfile | None = None,
    ) -> None:
        if (encoding, sample_rate) not in _FORMATS:
            raise ValueError(f"unsupported format {encoding};rate={sample_rate}")
        self.url = url
        self.call_uuid = call_uuid or str(uuid.uuid4())
        self.stream_id = str(uuid.uuid4())
        # Delivered as Plivo documents start.extra_headers: "k1=v1;k2=v2".
        self.extra_headers = extra_headers_as_delivered(extra_headers)
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.auth_token = auth_token
        self.network = NetworkProfile() if network is None else network
        self._print = printer or (lambda _line: None)
        self._open_timeout = open_timeout
        self._seq = 0
        self._buffer = _Buffer()
        self._pending_dtmf: deque[str] = deque()
        self._down_rate = StreamResampler(sample_rate, 8000)
        self._up: DelayedPipe | None = None
        # a path without delay (NetworkProfile.none()): messages go straight to the socket, in
        # order, instead of through a queue and a pump task each (the capacity bench's callers)
        self._direct = network is not None and network.is_none
        self._closed = False
        self._ws_send: Callable[[str], Awaitable[None]] | None = None
        self._media_head: str | None = None  # the media event's fixed parts (media_message)
        self._media_tail = ""
        self.tick = 0  # the current 20 ms tick of the call

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _encode(self, pcm: bytes) -> bytes:
        return pcm_to_ulaw(pcm) if self.encoding == "audio/x-mulaw" else pcm

    def _decode(self, payload: bytes) -> bytes:
        if self.encoding == "audio/x-mulaw":
            return ulaw_to_pcm(payload)
        return self._down_rate.push(payload[: len(payload) & ~1])

    def upgrade_headers(self) -> dict[str, str]:
        """The signature Plivo puts on the WebSocket upgrade: V3 over https://host/path, GET."""
        if not self.auth_token:
            return {}
        parts = urlsplit(self.url)
        signed = urlunsplit(("https", parts.netloc, parts.path or "/", parts.query, ""))
        return sign_v3(self.auth_token, "GET", signed)

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
                    "mediaFormat": {"encoding": self.encoding, "sampleRate": self.sample_rate},
                },
                "extra_headers": self.extra_headers,
            }
        )

    def media_message(self, pcm: bytes, chunk: int) -> str:
        """Plivo's media event (as json.dumps would write it, built from a template: this runs
        every 20 ms for every simulated caller)."""
        key = (self.encoding, pcm)
        payload = _PAYLOADS.get(key)
        if payload is None:
            payload = base64.b64encode(self._encode(pcm)).decode("ascii")
            if len(_PAYLOADS) < _PAYLOADS_MAX:
                _PAYLOADS[key] = payload
        if self._media_head is None:
            self._media_head = f', "streamId": {json.dumps(self.stream_id)}, "media": {{"track": "inbound", '
            self._media_tail = f'}}, "extra_headers": {json.dumps(self.extra_headers)}}}'
        # timestamp: Unix epoch ms, as a string
        return (f'{{"event": "media", "sequenceNumber": {self._next_seq()}{self._media_head}'
                f'"timestamp": "{int(time.time() * 1000)}", "chunk": {chunk}, "payload": "{payload}"'
                f'{self._media_tail}')

    def press(self, digit: str) -> None:
        """Send a DTMF event on the next tick."""
        self._pending_dtmf.append(digit)

    async def _send(self, text: str) -> None:
        if self._closed:
            return
        if self._direct:
            if self._ws_send is not None:
                await self._ws_send(text)
        elif self._up is not None:
            self._up.put(text)

    async def run(
        self,
        caller_pcm: bytes,
        *,
        tail_s: float = 1.0,
        max_s: float = 60.0,
        on_tick: Callable[[PlivoStreamClient, int], None] | None = None,
    ) -> StreamCallResult:
        """Stream ``caller_pcm`` (8 kHz) then ``tail_s`` of silence, then hang up (close),
        unless the bridge ends the call first; never longer than ``max_s``."""
        result = StreamCallResult(heard=b"", agent_audio_ms=0, first_audio_tick=None)
        heard = bytearray()
        wire_pcm = resample_all(caller_pcm, 8000, self.sample_rate) if caller_pcm else b""
        async with connect(self.url, open_timeout=self._open_timeout, compression=None,
                           max_size=2**20, additional_headers=self.upgrade_headers()) as ws:

            async def to_bridge(text: str) -> None:
                try:
                    await ws.send(text)
                except ConnectionClosed:
                    self._closed = True

            async def from_bridge(raw: str) -> None:
                await self._handle(raw, result)

            up = self._up = DelayedPipe(self.network, to_bridge, random.Random(self.network.seed))
            down = DelayedPipe(self.network, from_bridge, random.Random(self.network.seed + 1))
            result.network_rtt_ms = round(up.base_ms + down.base_ms, 1)
            self._ws_send = to_bridge
            await self._send(self.start_message())
            self._print(f"stream open: call {self.call_uuid}")
            receiver = asyncio.create_task(self._receive(ws, down, result))
            try:
                await self._tick_loop(wire_pcm, tail_s, max_s, result, heard, receiver, on_tick)
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver
                up.cancel()
                down.cancel()
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
        wire_pcm: bytes,
        tail_s: float,
        max_s: float,
        result: StreamCallResult,
        heard: bytearray,
        receiver: asyncio.Task[None],
        on_tick: Callable[[PlivoStreamClient, int], None] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        frame_bytes = self.sample_rate * 2 // 50  # 20 ms on the wire
        total_ticks = int(min(len(wire_pcm) / frame_bytes + tail_s / FRAME_S, max_s / FRAME_S))
        t0 = loop.time()
        for tick in range(total_ticks):
            if receiver.done() or self._closed:
                return
            self.tick = tick
            if on_tick is not None:
                on_tick(self, tick)
            frame = wire_pcm[tick * frame_bytes : (tick + 1) * frame_bytes]
            frame += bytes(frame_bytes - len(frame))
            await self._send(self.media_message(frame, tick + 1))
            while self._pending_dtmf:
                digit = self._pending_dtmf.popleft()
                await self._send(json.dumps({"event": "dtmf", "sequenceNumber": self._next_seq(),
                                       "streamId": self.stream_id,
                                       "dtmf": {"digit": digit, "track": "inbound",
                                                "timestamp": str(int(time.time() * 1000))},
                                       "extra_headers": self.extra_headers}))
            played, real, marks = self._buffer.take_frame()
            heard += played
            if real:
                result.agent_audio_ms += real * 1000 // 16000
                if result.first_audio_tick is None:
                    result.first_audio_tick = tick
                    self._print(f"agent audio starts at {tick * 20} ms")
            for name in marks:
                result.played_checkpoints.append(name)
                await self._send(json.dumps({"event": "playedStream", "sequenceNumber": self._next_seq(),
                                       "streamId": self.stream_id, "name": name}))
            # absolute deadlines: no drift over a long call
            delay = t0 + (tick + 1) * FRAME_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _receive(self, ws: ClientConnection, down: DelayedPipe, result: StreamCallResult) -> None:
        try:
            async for raw in ws:
                if self._direct:
                    await self._handle(_text(raw), result)
                else:
                    down.put(_text(raw))
        except ConnectionClosed:
            pass
        down.close()  # what was in flight still arrives
        await down.wait_closed()
        result.ended_by = result.ended_by or "bridge"

    async def _handle(self, raw: str, result: StreamCallResult) -> None:
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
            if media.get("contentType") != self.encoding or media.get("sampleRate") != self.sample_rate:
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
            await self._send(json.dumps({"event": "clearedAudio", "sequenceNumber": self._next_seq(),
                                   "streamId": self.stream_id}))
        elif event == "sendDTMF":
            digit = msg.get("dtmf")
            if isinstance(digit, str) and len(digit) == 1 and digit in "0123456789*#ABCD":
                result.dtmf_received.append(digit)
            else:
                result.bad_messages += 1


def _text(raw: Data) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
