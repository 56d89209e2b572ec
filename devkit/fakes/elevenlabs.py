"""Fake ElevenLabs TTS: the HTTP stream (POST /v1/text-to-speech/{voice}/stream), the
stream-input WebSocket (/v1/text-to-speech/{voice}/stream-input) and GET /v1/models (used
for connection warm-up); the multi-context WebSocket is in elevenlabs_multi.py. The "voice"
is a phase-continuous tone, MS_PER_CHAR per character.

As unkind as the service (vendor docs):
- output formats above the account's `tier` are refused with 403 output_format_not_allowed
  (pcm_44100 needs Pro, mp3_44100_192 Creator); the default tier is "free";
- `quota_exceeded` refuses requests with a 401 whose status is quota_exceeded (not a bad key);
- the stream-input socket closes after its idle timeout (20 s, or the `inactivity_timeout`
  query parameter; times `timeout_scale` so tests need not wait) with the documented
  ``{"message", "error": "input_timeout_exceeded", "code": 1008}`` frame, then close 1008;
- `ws_error` sends such an error frame (e.g. invalid_input_message) after the first text,
  then closes 1008.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from devkit.fakes.control import FaultedStream, Faults, Journal
from devkit.fakes.tone import MS_PER_CHAR, ToneSource

CHUNK_MS = 100  # pcm/ulaw/alaw reply chunk length
MP3_CHUNK_BYTES = 800
TIERS = ("free", "starter", "creator", "pro")
FORMAT_TIER = {"pcm_44100": "pro", "mp3_44100_192": "creator"}  # documented minimum plans
INACTIVITY_DEFAULT_S = 20
INACTIVITY_MAX_S = 180


class FakeElevenLabs:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.faults = Faults()  # HTTP stream
        self.ws_faults = Faults()  # stream-input WebSocket
        self.journal = Journal()
        self.tier = "free"
        self.quota_exceeded = False
        self.timeout_scale = 1.0  # stream-input idle timeout multiplier (tests: << 1)
        self.ws_error: tuple[str, str] | None = None  # (error, message) for the next socket
        # Cut every stream-input socket whose text holds this, before its first audio: a fault
        # keyed on the reply rather than on when the socket opened (a daemon shared by several
        # tests may hold spares opened before the fault was set)
        self.ws_drop_text: str | None = None
        # multi-stream-input (elevenlabs_multi.py): what its idle timeout ends, "socket" or "context"
        self.multi_idle_closes = "socket"
        # multi-stream-input: whether closing a context that never got text is confirmed (isFinal)
        self.multi_empty_close_final = True

    def _refuse(self, request: web.Request, faults: Faults) -> web.Response | None:
        if request.headers.get("xi-api-key") != self.api_key:
            self.journal.add("rejected", status=401)
            return web.json_response(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, status=401
            )
        if self.quota_exceeded and request.path != "/v1/models":
            self.journal.add("rejected", status=401, reason="quota_exceeded")
            message = (
                "This request exceeds your quota of 10000. You have 0 credits remaining, "
                "while 35 credits are required for this request."
            )
            return web.json_response({"detail": {"status": "quota_exceeded", "message": message}}, status=401)
        fmt = request.query.get("output_format", "")
        needs = FORMAT_TIER.get(fmt)
        if needs is not None and TIERS.index(self.tier) < TIERS.index(needs):
            self.journal.add("rejected", status=403, reason="output_format_not_allowed")
            message = f"Requested output format {fmt} is only allowed for {needs.title()} tier and above."
            return web.json_response(
                {"detail": {"status": "output_format_not_allowed", "message": message}}, status=403
            )
        status = faults.take_status()
        if status:
            self.journal.add("rejected", status=status)
            return web.json_response({"detail": {"status": "fault", "message": "injected"}}, status=status)
        return None

    async def models(self, request: web.Request) -> web.Response:
        refused = self._refuse(request, Faults())
        if refused is not None:
            return refused
        self.journal.add("warmup", peer=_peer(request))
        return web.json_response([])

    async def stream(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse(request, self.faults)
        if refused is not None:
            return refused
        body = await request.json()
        fmt = request.query.get("output_format", "mp3_44100_128")
        self.journal.add(
            "request",
            peer=_peer(request),
            voice=request.match_info["voice"],
            text=body.get("text", ""),
            output_format=fmt,
            model_id=body.get("model_id"),
        )
        try:
            source = ToneSource(fmt)
        except ValueError as exc:
            return web.json_response(
                {"detail": {"status": "invalid_format", "message": str(exc)}}, status=422
            )
        stream = FaultedStream(self.faults, self.journal, request.transport)
        resp = web.StreamResponse(headers={"Content-Type": "audio/basic"})
        await resp.prepare(request)
        try:
            async for piece in stream.chunks(_split(source, source.encode(body.get("text", "")))):
                first = stream.sent == 0
                await asyncio.sleep(self.faults.first_byte_delay_s if first else self.faults.chunk_delay_s)
                if first:
                    self.journal.add("first_byte")
                await resp.write(piece)
            if stream.dropped:
                return resp
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.journal.add("aborted")
            raise
        self.journal.add("completed")
        return resp

    async def accept_ws(self, request: web.Request, **journal_extra: Any) -> WsOpening | web.Response:
        """A stream-input or multi-stream-input socket's opening: the refusal (key, quota,
        refused faults) or the accepted socket with its format, idle timeout and pending
        ``ws_error`` (taken: it is for the next socket only)."""
        refused = self._refuse(request, self.ws_faults)
        if refused is not None:
            return refused
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        fmt = request.query.get("output_format", "mp3_44100_128")
        self.journal.add(
            "request",
            peer=_peer(request),
            voice=request.match_info["voice"],
            output_format=fmt,
            model_id=request.query.get("model_id"),
            ws=True,
            **journal_extra,
        )
        idle = min(INACTIVITY_MAX_S, int(request.query.get("inactivity_timeout", INACTIVITY_DEFAULT_S)))
        error, self.ws_error = self.ws_error, None
        return WsOpening(ws, fmt, idle * self.timeout_scale, error)

    async def stream_input(self, request: web.Request) -> web.StreamResponse:
        opening = await self.accept_ws(request)
        if isinstance(opening, web.Response):
            return opening
        await _InputSession(self, opening.ws, request, ToneSource(opening.fmt), opening.idle_s,
                            opening.error).run()
        return opening.ws


@dataclass(frozen=True)
class WsOpening:
    """An accepted TTS socket: what both WebSocket endpoints start their session with."""

    ws: web.WebSocketResponse
    fmt: str
    idle_s: float
    error: tuple[str, str] | None


class Idle:
    """receive_json's answer when the idle timeout passed with no message."""



async def receive_json(ws: web.WebSocketResponse, idle_s: float | None) -> dict[str, Any] | Idle | None:
    """The next text message, parsed; an Idle after ``idle_s`` without one; None once the client
    closed. Other frames are skipped."""
    while True:
        try:
            msg = await asyncio.wait_for(ws.receive(), idle_s)
        except TimeoutError:
            return Idle()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        if msg.type == WSMsgType.TEXT:
            data: dict[str, Any] = json.loads(msg.data)
            return data


def idle_message(idle_s: float) -> str:
    return (f"Have not received a new text input within the timeout of {idle_s:g} seconds. "
            "Streaming input will be closed.")


async def send_error(journal: Journal, ws: web.WebSocketResponse, error: str, message: str) -> None:
    """The documented error shape, then close 1008 (policy violation)."""
    journal.add("ws_error", error=error)
    await ws.send_str(json.dumps({"message": message, "error": error, "code": 1008}))
    await ws.close(code=1008, message=error.encode()[:120])


class _InputSession:
    """One stream-input WebSocket: text in, base64 audio out, generation in a sender task."""

    def __init__(
        self,
        fake: FakeElevenLabs,
        ws: web.WebSocketResponse,
        request: web.Request,
        source: ToneSource,
        idle_s: float,
        error: tuple[str, str] | None,
    ) -> None:
        self.idle_s = idle_s
        self.error = error
        self.fake = fake
        self.ws = ws
        self.request = request
        self.source = source
        self.buffer = ""
        self.schedule = 120
        self.jobs: asyncio.Queue[str | None] = asyncio.Queue()
        self.stream = FaultedStream(fake.ws_faults, fake.journal, request.transport)
        self.finished = False

    async def run(self) -> None:
        journal = self.fake.journal
        sender = asyncio.create_task(self._sender())
        try:
            first = True
            while True:
                data = await receive_json(self.ws, self.idle_s)
                if isinstance(data, Idle):
                    await self._fail("input_timeout_exceeded", idle_message(self.idle_s))
                    return
                if data is None:
                    break
                text = data.get("text")
                if first:
                    first = False
                    journal.add("init", message=data)
                    schedule = (data.get("generation_config") or {}).get("chunk_length_schedule")
                    if schedule:
                        self.schedule = int(schedule[0])
                    continue
                if self.error is not None:
                    await self._fail(*self.error)
                    return
                journal.add(
                    "text",
                    text=text,
                    flush=bool(data.get("flush")),
                    trigger=bool(data.get("try_trigger_generation")),
                )
                if text == "":
                    self._generate()
                    self.jobs.put_nowait(None)
                    continue  # keep reading: a client close during the audio is an abort
                self.buffer += text or ""
                if (
                    data.get("flush")
                    or data.get("try_trigger_generation")
                    or len(self.buffer) >= self.schedule
                ):
                    self._generate()
            # the socket is closed (by us after isFinal, or by the client): stop generating
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):  # a send to a closed socket: expected here
                await sender
            if not self.finished:
                journal.add("aborted")

    async def _fail(self, error: str, message: str) -> None:
        await send_error(self.fake.journal, self.ws, error, message)
        self.finished = True  # the server ended it: not a client abort

    def _generate(self) -> None:
        if self.buffer.strip():
            self.jobs.put_nowait(self.buffer)
        self.buffer = ""

    async def _sender(self) -> None:
        faults = self.fake.ws_faults
        while (text := await self.jobs.get()) is not None:
            drop = self.fake.ws_drop_text
            if drop and drop in text and self.stream.sent == 0:
                self.fake.journal.add("dropped", sent=0)
                self.stream.dropped = True
                if self.request.transport is not None:
                    self.request.transport.abort()
                return
            alignment: dict[str, Any] | None = _alignment(text)
            async for piece in self.stream.chunks(_split(self.source, self.source.encode(text))):
                first = self.stream.sent == 0
                await asyncio.sleep(faults.first_byte_delay_s if first else faults.chunk_delay_s)
                if first:
                    self.fake.journal.add("first_byte")
                await self.ws.send_str(
                    json.dumps(
                        {
                            "audio": base64.b64encode(piece).decode(),
                            "isFinal": None,
                            "normalizedAlignment": alignment,
                        }
                    )
                )
                alignment = None
            if self.stream.dropped:
                return
        await self.ws.send_str(json.dumps({"isFinal": True}))
        self.finished = True
        self.fake.journal.add("completed")
        await self.ws.close()


def _alignment(text: str) -> dict[str, Any]:
    return {
        "chars": list(text),
        "charStartTimesMs": [i * MS_PER_CHAR for i in range(len(text))],
        "charDurationsMs": [MS_PER_CHAR] * len(text),
    }


def _split(source: ToneSource, audio: bytes) -> list[bytes]:
    if source.codec == "mp3":
        size = MP3_CHUNK_BYTES
    else:
        size = source.rate * CHUNK_MS // 1000 * (2 if source.codec == "pcm" else 1)
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def _peer(request: web.Request) -> int:
    """The client's TCP port: the same port on two requests means a reused connection."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return int(peer[1]) if peer else 0
