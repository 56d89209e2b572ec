"""Fake Deepgram live STT: GET /v1/listen upgraded to a WebSocket (DESIGN.md, Wire notes: Cloud providers).

"Recognition" is an energy detector on the received audio: each burst of loud audio is one
utterance, transcribed as the next line of `script`. Times are in audio time (samples
received), so tests may push audio faster than real time. It sends SpeechStarted, interim
Results while speech lasts, a final Results (speech_final) after `endpointing` ms of silence,
UtteranceEnd after `utterance_end_ms`, answers CloseStream (Metadata, then close).

As unkind as the service (vendor docs):
- final results come a processing delay after the audio (150-300 ms by default);
- a long utterance is finalized in segments (an is_final every SEGMENT_MS of speech), and
  interims cover only the current segment;
- a burst too short to be a word (noise) ends with an EMPTY speech_final, and by default an
  empty speech_final also comes in the gap between the last speech and the words' final;
- Finalize is answered (from_finalize) when there is audio to process: speech in progress
  or at least FINALIZE_MIN_MS of unfinalized audio (so a Finalize that follows another by
  less than that has almost nothing to process). Otherwise the docs say a reply "may" come
  but is "not guaranteed": by default nothing comes; `small_finalize_answered` plays the
  other documented answer, an empty from_finalize final;
- no data (audio or a text message) for `idle_timeout_s` closes the socket 1011 NET-0001;
- `error_close` closes with a coded frame (1011 NET-0000, 1008 DATA-0000) after some audio;
- an unknown model is refused at the handshake with HTTP 400 and a dg-error header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from devkit.fakes.control import Faults, Journal
from devkit.fakes.energy import BLOCK_MS, EnergyBlocks, receive_or_idle_close

# Interim cadence. Deepgram documents no exact figure; its UtteranceEnd page ties that feature
# to interims coming about every second (providers-documented.md). Tests use 300 ms (fast
# interims for barge-in); bench/voice_to_voice.py sets the documented ~1 s.
INTERIM_EVERY_MS = 300
EMPTY_FINAL_AFTER_MS = 1000  # silence is acknowledged with empty finals, as Deepgram does
MS_PER_WORD = 250  # how fast the fake "hears" the script line's words
SEGMENT_MS = 3000  # continuous speech is finalized in segments this long
NOISE_MS = 80  # less voiced audio than this in a burst is noise: no words, an empty final
GAP_EMPTY_FINAL_MS = 100  # silence after speech before the empty speech_final "in the gap"
FINALIZE_MIN_MS = 250  # less unfinalized audio than this (and no speech): Finalize unanswered
IDLE_TIMEOUT_S = 10.0  # documented: no audio or text message for 10 s closes 1011 NET-0001
AUDIO_KEPT = 1 << 20  # bytes of received audio kept for tests
DEFAULT_FINAL_DELAY_S = (0.15, 0.30)  # processing delay of a final, drawn per final
MODELS = frozenset(
    {"nova-3", "nova-3-general", "nova-3-medical", "nova-2", "nova-2-general", "nova-2-phonecall",
     "nova-2-meeting", "nova-2-finance", "nova-2-conversationalai", "nova", "enhanced", "base"}
)


@dataclass(frozen=True)
class ErrorClose:
    """Close the socket with this code and reason once `after_bytes` of audio came in."""

    code: int
    reason: str
    after_bytes: int = 0
    times: int = 1


class FakeDeepgram:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.faults = Faults()
        self.journal = Journal()
        self.script: deque[str] = deque()
        # wall-clock wait before a final result: seconds, or a (low, high) range drawn per final
        self.final_delay_s: float | tuple[float, float] = DEFAULT_FINAL_DELAY_S
        self.random = random.Random(15)  # the delays are reproducible run to run
        self.idle_timeout_s = IDLE_TIMEOUT_S
        self.empty_finals_in_gap = True
        self.interim_every_ms = INTERIM_EVERY_MS
        # Whether an interim holding every word comes as soon as speech stops is not
        # documented (interims follow the service's own processing cadence): False, the last
        # interim is the cadence's, and may miss the last words; True, an optimistic service
        # sends the whole utterance as an interim at the first silent block. Both playable.
        self.interim_on_silence = False
        self.error_close: ErrorClose | None = None
        # a Finalize with less than FINALIZE_MIN_MS to process: unanswered (False) or answered
        # with an empty from_finalize final (True); the Finalize page allows both
        self.small_finalize_answered = False
        # where the fake draws "a noticeable amount of audio buffered" (the Finalize page's
        # words, no figure given) for a Finalize with no speech in progress; a test may play a
        # service that draws it higher than the client's own guess (FINALIZE_MIN_PENDING_S)
        self.finalize_min_ms = FINALIZE_MIN_MS
        self.audio = bytearray()  # the audio received, as sent (all sockets; the first MiB)

    def next_text(self) -> str:
        return self.script.popleft() if self.script else "hello"

    def final_delay(self) -> float:
        delay = self.final_delay_s
        if isinstance(delay, tuple):
            return self.random.uniform(*delay)
        return delay

    def take_error_close(self) -> ErrorClose | None:
        close = self.error_close
        if close is None or close.times <= 0:
            return None
        self.error_close = ErrorClose(close.code, close.reason, close.after_bytes, close.times - 1)
        return close

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
        model = request.query.get("model", "base")
        if model not in MODELS:
            message = "No such model/language/tier combination found."
            self.journal.add("rejected", status=400, model=model)
            return web.json_response(
                {"err_code": "Bad Request", "err_msg": message}, status=400, headers={"dg-error": message}
            )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        query = dict(request.query)
        # what the client offered (permessage-deflate or not): the fake accepts either, as a
        # server may; the journal lets a test see the offer
        extensions = request.headers.get("Sec-WebSocket-Extensions", "")
        self.journal.add("request", query=query, extensions=extensions)
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
        self.error_close = fake.take_error_close()
        self.blocks = EnergyBlocks(self.rate, self.encoding)
        self.block = self.blocks.block
        self.cursor = 0  # samples processed
        self.final_until = 0  # samples covered by final results
        self.speech_start: int | None = None
        self.segment_start = 0  # samples: where the current segment's speech began
        self.voiced_ms = 0  # voiced audio in the current burst
        self.silence_run = 0
        self.since_interim = 0
        self.text = ""  # the utterance in progress ("" until it is long enough to be words)
        self.words_done = 0  # words of `text` already sent in segment finals
        self.gap_final_sent = False
        self.awaiting_utterance_end = False
        self.bytes_in = 0
        self.sent = 0
        self.swallowed: list[str] = []  # final transcripts not delivered (stall)
        # (due time, message), in order; a message leaves only once sent, so a cut socket
        # knows which words never went out
        self.outbox: deque[tuple[float, dict[str, Any]]] = deque()
        self.outbox_changed = asyncio.Event()
        self.sender: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.sender = asyncio.create_task(self._sender())
        try:
            await self._run()
        finally:
            self.sender.cancel()
            # (no await before the script is restored: the client's next socket may be
            # opening already and must hear these words again)
            # words the client never received (cut mid-utterance, finals swallowed by a stall
            # or still in the outbox) are recognised again when it replays the audio
            unsent = [_transcript(m) for _, m in self.outbox if m.get("is_final") and _transcript(m)]
            self.outbox.clear()
            rest = " ".join(self.text.split()[self.words_done :]) if self.speech_start is not None else ""
            unheard = [*self.swallowed, *unsent, rest]
            for text in reversed([t for t in unheard if t]):
                self.fake.script.appendleft(text)
            with contextlib.suppress(BaseException):
                await self.sender

    async def _run(self) -> None:
        journal = self.fake.journal
        while True:
            msg = await receive_or_idle_close(self.ws, self.fake.idle_timeout_s, journal)
            if msg is None:
                return
            if msg.type == WSMsgType.BINARY:
                self.bytes_in += len(msg.data)
                if self.drop_after is not None and self.bytes_in >= self.drop_after:
                    journal.add("dropped", bytes_in=self.bytes_in)
                    _cut(self.request)
                    return
                close = self.error_close
                if close is not None and self.bytes_in >= close.after_bytes:
                    journal.add("error_closed", code=close.code, reason=close.reason)
                    await self.ws.close(code=close.code, message=close.reason.encode())
                    return
                if len(self.fake.audio) < AUDIO_KEPT:
                    self.fake.audio += msg.data[: AUDIO_KEPT - len(self.fake.audio)]
                await self._audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                kind = json.loads(msg.data).get("type", "")
                journal.add("control", type=kind)
                if kind == "Finalize":
                    await self._finalize()
                elif kind == "CloseStream":
                    await self._finalize(quiet=True)
                    await self._flush()
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
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
        journal.add("aborted", bytes_in=self.bytes_in)  # the client went away without CloseStream

    async def _audio(self, data: bytes) -> None:
        for voiced in self.blocks.feed(data):
            await self._block(voiced)
            self.cursor += self.block

    async def _block(self, voiced: bool) -> None:
        if voiced:
            await self._voiced()
            return
        self.silence_run += BLOCK_MS
        if self.speech_start is not None and self.silence_run == BLOCK_MS and self.interim \
                and self.fake.interim_on_silence and self.text:
            await self._results(" ".join(self.text.split()[self.words_done :]), is_final=False)
        if self.speech_start is not None:
            if (
                self.fake.empty_finals_in_gap
                and self.text
                and not self.gap_final_sent
                and self.silence_run >= GAP_EMPTY_FINAL_MS
            ):
                # seen from the real service: an empty speech_final before the words' final
                self.gap_final_sent = True
                await self._results("", is_final=True, speech_final=True, end=self.final_until)
            if self.endpointing_ms is not None and self.silence_run >= self.endpointing_ms:
                await self._final(speech_final=True)
        elif (
            self.awaiting_utterance_end
            and self.utterance_end_ms is not None
            and self.silence_run >= self.utterance_end_ms
        ):
            self.awaiting_utterance_end = False
            await self._send_later(
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.final_until / self.rate}
            )
        elif (self.cursor - self.final_until) * 1000 >= EMPTY_FINAL_AFTER_MS * self.rate:
            await self._results("", is_final=True, end=self.cursor + self.block)

    async def _voiced(self) -> None:
        if self.speech_start is None:
            self.speech_start = self.segment_start = self.cursor
            self.text, self.words_done, self.voiced_ms = "", 0, 0
            self.gap_final_sent = False
            self.since_interim = 0
            self.awaiting_utterance_end = False
            if self.vad_events:
                await self._send_later(
                    {"type": "SpeechStarted", "channel": [0], "timestamp": self.cursor / self.rate}
                )
        self.voiced_ms += BLOCK_MS
        if not self.text and self.voiced_ms >= NOISE_MS:
            self.text = self.fake.next_text()  # long enough to be words
        self.silence_run = 0
        self.since_interim += BLOCK_MS
        if self.text and (self.cursor - self.segment_start) * 1000 >= SEGMENT_MS * self.rate:
            await self._segment_final()
        elif self.interim and self.text and self.since_interim >= self.fake.interim_every_ms:
            self.since_interim = 0
            words = self._heard_words()
            if words:
                await self._results(" ".join(words), is_final=False)

    def _heard_words(self) -> list[str]:
        """The current segment's words heard so far (interims cover only the segment)."""
        words = self.text.split()
        heard_ms = (self.cursor - (self.speech_start or 0)) * 1000 // self.rate
        heard = max(self.words_done + 1, min(len(words), heard_ms // MS_PER_WORD))
        return words[self.words_done : heard]

    async def _segment_final(self) -> None:
        """Continuous speech: finalize what was heard so far; the utterance goes on."""
        words = self._heard_words()
        self.words_done += len(words)
        self.segment_start = self.cursor
        self.since_interim = 0
        await self._results(" ".join(words), is_final=True, end=self.cursor + self.block)

    async def _final(self, *, speech_final: bool = False, from_finalize: bool = False) -> None:
        text = " ".join(self.text.split()[self.words_done :])
        said = bool(self.text)
        self.text, self.speech_start, self.words_done = "", None, 0
        self.awaiting_utterance_end = said
        await self._results(
            text,
            is_final=True,
            speech_final=speech_final,
            from_finalize=from_finalize,
            end=self.cursor + self.block,
        )

    async def _finalize(self, quiet: bool = False) -> None:
        """Documented: a from_finalize reply is not guaranteed without significant audio."""
        if self.speech_start is not None:
            await self._final(from_finalize=True)
        elif quiet:
            return
        elif (self.cursor - self.final_until) * 1000 >= self.fake.finalize_min_ms * self.rate \
                or self.fake.small_finalize_answered:
            await self._results("", is_final=True, from_finalize=True, end=self.cursor)
        else:
            self.fake.journal.add("finalize_unanswered")

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
            self.final_until = max(self.final_until, stop)
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
        message = {
            "type": "Results",
            "channel_index": [0, 1],
            "start": start / self.rate,
            "duration": max(0, stop - start) / self.rate,
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [{"transcript": text, "confidence": 0.98 if text else 0.0, "words": words}]
            },
            "metadata": {
                "request_id": "fake",
                "model_uuid": "fake",
                "model_info": {"name": "nova-3", "version": "fake", "arch": "fake"},
            },
        }
        # finals with words take processing time; empty ones and interims go out at once
        await self._send_later(message, self.fake.final_delay() if is_final and text else 0.0)

    async def _send_later(self, message: dict[str, Any], delay: float = 0.0) -> None:
        """In order, but not before `delay` from now (messages queue behind a slow final)."""
        self.outbox.append((asyncio.get_running_loop().time() + delay, message))
        self.outbox_changed.set()

    async def _sender(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.outbox:
                self.outbox_changed.clear()
                await self.outbox_changed.wait()
                continue
            due, message = self.outbox[0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._send(message)
            self.outbox.popleft()

    async def _flush(self) -> None:
        """Everything queued goes out (CloseStream: the last results before Metadata)."""
        for _ in range(200):  # bounded: at most the longest processing delay, plus slack
            if not self.outbox:
                return
            await asyncio.sleep(0.01)

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
            speech_final=message.get("speech_final"),
            from_finalize=message.get("from_finalize"),
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
