"""Fake Deepgram live STT: GET /v1/listen upgraded to a WebSocket (DESIGN.md, Wire notes: Cloud providers).

"Recognition" is an energy detector on the received audio: each burst of loud audio is one
utterance, transcribed as the next line of `script`. Times are in audio time (samples
received), so tests may push audio faster than real time. It sends SpeechStarted, interim
Results while speech lasts, a final Results (speech_final) after `endpointing` ms of silence,
UtteranceEnd after `utterance_end_ms`, answers Finalize (from_finalize) and CloseStream
(Metadata, then close).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from bridge.audio.g711 import ulaw_to_pcm
from bridge.devtools.fakes.control import Faults, Journal

BLOCK_MS = 10
VOICE_RMS = 500.0  # a block louder than this is "speech"
INTERIM_EVERY_MS = 300
EMPTY_FINAL_AFTER_MS = 1000  # silence is acknowledged with empty finals, as Deepgram does


class FakeDeepgram:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.faults = Faults()
        self.journal = Journal()
        self.script: deque[str] = deque()
        # extra wall-clock wait before a final result (latency profile: "final 150 ms after end")
        self.final_delay_s = 0.0

    def next_text(self) -> str:
        return self.script.popleft() if self.script else "hello"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.journal.add("rejected", status=401)
            return web.json_response(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}, status=401
            )
        status = self.faults.take_status()
        if status:
            self.journal.add("rejected", status=status)
            return web.json_response({"err_code": "FAULT", "err_msg": "injected"}, status=status)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        query = dict(request.query)
        self.journal.add("request", query=query)
        session = _Session(self, ws, request, query)
        await session.run()
        return ws


class _Session:
    """One live connection."""

    def __init__(
        self, fake: FakeDeepgram, ws: web.WebSocketResponse, request: web.Request, query: dict[str, str]
    ) -> None:
        self.fake = fake
        self.ws = ws
        self.request = request
        self.encoding = query.get("encoding", "linear16")
        self.rate = int(query.get("sample_rate", "16000"))
        self.endpointing_ms = _int_or_none(query.get("endpointing"), 10)
        self.utterance_end_ms = _int_or_none(query.get("utterance_end_ms"), None)
        self.interim = query.get("interim_results") == "true"
        self.vad_events = query.get("vad_events") == "true"
        self.stall_after, self.drop_after = fake.faults.take_stream_faults()
        self.block = self.rate * BLOCK_MS // 1000
        self.pending = np.zeros(0, dtype=np.int16)
        self.cursor = 0  # samples processed
        self.final_until = 0  # samples covered by final results
        self.speech_start: int | None = None
        self.silence_run = 0
        self.since_interim = 0
        self.text = ""  # the utterance in progress
        self.awaiting_utterance_end = False
        self.bytes_in = 0
        self.sent = 0
        self.swallowed: list[str] = []  # final transcripts not delivered (stall)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # words the client never received (cut mid-utterance, or finals swallowed by a
            # stall) are recognised again when it replays the audio on a new socket
            unheard = [*self.swallowed, self.text] if self.speech_start is not None else self.swallowed
            for text in reversed([t for t in unheard if t]):
                self.fake.script.appendleft(text)

    async def _run(self) -> None:
        journal = self.fake.journal
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                self.bytes_in += len(msg.data)
                if self.drop_after is not None and self.bytes_in >= self.drop_after:
                    journal.add("dropped", bytes_in=self.bytes_in)
                    _cut(self.request)
                    return
                await self._audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                kind = json.loads(msg.data).get("type", "")
                journal.add("control", type=kind)
                if kind == "Finalize":
                    await self._finalize()
                elif kind == "CloseStream":
                    await self._finalize(quiet=True)
                    await self._send(
                        {
                            "type": "Metadata",
                            "request_id": str(uuid.uuid4()),
                            "duration": self.cursor / self.rate,
                            "channels": 1,
                        }
                    )
                    await self.ws.close()
                    journal.add("completed")
                    return
        journal.add("aborted", bytes_in=self.bytes_in)  # the client went away without CloseStream

    async def _audio(self, data: bytes) -> None:
        if self.encoding == "mulaw":
            data = ulaw_to_pcm(data)
        self.pending = np.concatenate([self.pending, np.frombuffer(data[: len(data) & ~1], dtype="<i2")])
        while len(self.pending) >= self.block:
            block, self.pending = self.pending[: self.block], self.pending[self.block :]
            await self._block(float(np.sqrt(np.mean(block.astype(np.float64) ** 2))) > VOICE_RMS)
            self.cursor += self.block

    async def _block(self, voiced: bool) -> None:
        if voiced:
            if self.speech_start is None:
                self.speech_start = self.cursor
                self.text = self.fake.next_text()
                self.since_interim = 0
                self.awaiting_utterance_end = False
                if self.vad_events:
                    await self._send(
                        {"type": "SpeechStarted", "channel": [0], "timestamp": self.cursor / self.rate}
                    )
            self.silence_run = 0
            self.since_interim += BLOCK_MS
            if self.interim and self.since_interim >= INTERIM_EVERY_MS:
                self.since_interim = 0
                await self._results(self._partial(), is_final=False)
            return
        self.silence_run += BLOCK_MS
        if self.speech_start is not None:
            if self.endpointing_ms is not None and self.silence_run >= self.endpointing_ms:
                await self._final(speech_final=True)
        elif (
            self.awaiting_utterance_end
            and self.utterance_end_ms is not None
            and self.silence_run >= self.utterance_end_ms
        ):
            self.awaiting_utterance_end = False
            await self._send(
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.final_until / self.rate}
            )
        elif (self.cursor - self.final_until) * 1000 >= EMPTY_FINAL_AFTER_MS * self.rate:
            await self._results("", is_final=True, end=self.cursor + self.block)

    def _partial(self) -> str:
        words = self.text.split()
        heard_ms = (self.cursor - (self.speech_start or 0)) * 1000 // self.rate
        return " ".join(words[: max(1, min(len(words), heard_ms // 250))])

    async def _final(self, *, speech_final: bool = False, from_finalize: bool = False) -> None:
        text, self.text, self.speech_start = self.text, "", None
        self.awaiting_utterance_end = bool(text)
        if self.fake.final_delay_s:
            await asyncio.sleep(self.fake.final_delay_s)
        await self._results(
            text,
            is_final=True,
            speech_final=speech_final,
            from_finalize=from_finalize,
            end=self.cursor + self.block,
        )

    async def _finalize(self, quiet: bool = False) -> None:
        if self.speech_start is not None:
            await self._final(from_finalize=True)
        elif not quiet:
            await self._results("", is_final=True, from_finalize=True, end=self.cursor)

    async def _results(
        self,
        text: str,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
        end: int | None = None,
    ) -> None:
        start = self.final_until
        stop = self.cursor if end is None else end
        if is_final:
            self.final_until = stop
        words = [
            {
                "word": w.lower().strip(".,?!"),
                "start": start / self.rate,
                "end": stop / self.rate,
                "confidence": 0.98,
                "punctuated_word": w,
            }
            for w in text.split()
        ]
        await self._send(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "start": start / self.rate,
                "duration": (stop - start) / self.rate,
                "is_final": is_final,
                "speech_final": speech_final,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [
                        {"transcript": text, "confidence": 0.98 if text else 0.0, "words": words}
                    ]
                },
                "metadata": {
                    "request_id": "fake",
                    "model_uuid": "fake",
                    "model_info": {"name": "nova-3", "version": "fake", "arch": "fake"},
                },
            }
        )

    async def _send(self, message: dict[str, Any]) -> None:
        if self.stall_after is not None and self.sent >= self.stall_after:
            if self.sent == self.stall_after:
                self.fake.journal.add("stalled")
                self.sent += 1
            if message.get("is_final") and _transcript(message):
                self.swallowed.append(_transcript(message))
            return  # silently swallowed: the client must notice the stall
        if self.sent == 0 and self.fake.faults.first_byte_delay_s:
            await asyncio.sleep(self.fake.faults.first_byte_delay_s)
        self.sent += 1
        self.fake.journal.add(
            "sent",
            type=message["type"],
            text=message.get("channel", {}) and _transcript(message),
            is_final=message.get("is_final"),
        )
        await self.ws.send_str(json.dumps(message))


def _transcript(message: dict[str, Any]) -> str:
    channel = message.get("channel")
    if isinstance(channel, dict):
        return str(channel["alternatives"][0]["transcript"])
    return ""


def _int_or_none(value: str | None, default: int | None) -> int | None:
    if value is None:
        return default
    if value == "false":
        return None
    return int(value)


def _cut(request: web.Request) -> None:
    """Drop the TCP connection without a WebSocket close frame (a dead network path)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
