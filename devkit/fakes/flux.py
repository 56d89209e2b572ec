"""Fake Deepgram Flux: GET /v2/listen upgraded to a WebSocket (deepgram-sdk 7.x listen.v2).

Flux detects turns itself. Server messages (deepgram/listen/v2/types): ``Connected`` first,
then ``TurnInfo`` events, each with a ``sequence_id`` counting every server message:
StartOfTurn when speech begins, Update with the turn's CUMULATIVE transcript while it goes on,
EagerEndOfTurn after a short pause when ``eager_eot_threshold`` is set (then TurnResumed if
speech comes back), EndOfTurn with ``trigger`` model (the pause was long enough), manual (the
client sent ForceEndTurn) or timeout (``eot_timeout_ms`` of silence without a confident end).
``Configure`` is answered with ConfigureSuccess or ConfigureFailure; `error` sends an
``Error`` frame and closes 1011.

Timing, from what Deepgram and its resellers publish: EagerEndOfTurn fires on medium
confidence, before the confident EndOfTurn (the eager threshold must not exceed the EndOfTurn
one); the median end-of-turn latency is under 300 ms, and eager mode saves about 150 ms at the
median (150-250 ms for thresholds of 0.3-0.5). So the fake sends EagerEndOfTurn after
``eager_eot_after_ms`` (150) and EndOfTurn after ``eot_after_ms`` (300) of silence after the
last speech, both settable per fake (eager only if earlier than EndOfTurn); that latency
includes Flux's own processing, so nothing else is added. As the state-machine page says,
EagerEndOfTurn carries a nonempty transcript, EndOfTurn's transcript matches the EagerEndOfTurn
before it, and TurnResumed (only after an EagerEndOfTurn) comes first when speech returns.

The state page also says Update comes "approximately every 0.25 seconds of transcribed
audio, regardless of transcript updates, unless a state change has occurred", and that
``turn_index`` "increments immediately following an EndOfTurn message": so whether Updates
also come between turns (over silence, with an empty transcript and the NEXT turn's index) is
left open; ``updates_outside_turns`` plays that (off by default: one message every 240 ms of
silence per call would weigh on the capacity benches). turn_index starts at 0 and moves on
right after each EndOfTurn.

Recognition is the same energy detector as the v1 fake: each burst is the next `script`
line. A line ending in "..." trails off: the model is never confident, so only the timeout
(or ForceEndTurn) ends that turn. Not established from the documentation, so assumed here:
ForceEndTurn with no turn open gets no reply (the state page has no ForceEndTurn edge out of
Initial; the Voice Agent's ForceEndTurn page says "the message is ignored"), and a socket idle for
10 s closes 1011 as v1 does (v2 has no KeepAlive message; the client sends silence instead).

ForceEndTurn "ends the turn on the audio transcribed so far" (its page): whether audio received
just before it (a reconnect's replay, seconds in one message) is transcribed by then is not
said. ``transcribe_behind_ms`` plays both: 0 (default), every block received before it is;
N, the last N ms received are not yet (they are, in order, as more audio comes, and all of them
on CloseStream), so a ForceEndTurn sent right after a replay finds the replay's turn not yet
open and is ignored, and that turn ends on its own (model or timeout).

Faults (``faults.drop_after``, audio bytes in; ``fault_times``): the TCP connection is cut with
no close frame. ``faults.stall_after`` (audio bytes in): the network path dies WITHOUT a FIN or
a close: the connection stays open and the fake reads and sends nothing more, so WebSocket pings
go unanswered too (RFC 6455 5.5.2: a Ping is answered by a Pong "as soon as practical", by any
server, Deepgram's included); with ``stall_answers_pings`` the server still answers pings but
Flux sends nothing more (a transcription backend stuck behind a live socket). Recognition is the
same on the replayed audio: the words of a turn the cut or stall left unended go back to the
front of ``script``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from devkit.fakes.control import Faults, Journal
from devkit.fakes.energy import BLOCK_MS, EnergyBlocks, receive_or_idle_close

NOISE_MS = 80  # less voiced audio than this opens no turn
UPDATE_EVERY_MS = 240  # Flux sends a TurnInfo about every 240 ms of audio (speech or pause)
MS_PER_WORD = 250
EAGER_AFTER_MS = 150  # pause before EagerEndOfTurn (when eager_eot_threshold is set)
EOT_AFTER_MS = 300  # pause before a confident EndOfTurn
IDLE_TIMEOUT_S = 10.0
STALL_HOLD_S = 60.0  # a stalled connection is held open at most this long (bounded)
MODELS = frozenset({"flux-general-en", "flux-general-multi"})


class FakeFlux:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.journal = Journal()
        self.script: deque[str] = deque()
        self.idle_timeout_s = IDLE_TIMEOUT_S
        self.error: tuple[str, str] | None = None  # (code, description) once audio arrives
        self.eager_eot_after_ms = EAGER_AFTER_MS  # silence before EagerEndOfTurn (eager mode)
        self.eot_after_ms = EOT_AFTER_MS  # silence before a confident EndOfTurn
        self.updates_outside_turns = False  # Updates every UPDATE_EVERY_MS between turns too
        self.transcribe_behind_ms = 0  # audio received but not yet transcribed (read per socket)
        self.stall_answers_pings = False  # faults.stall_after: pings still answered (else not)
        self.faults = Faults()

    def next_text(self) -> str:
        return self.script.popleft() if self.script else "hello"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.journal.add("rejected", status=401)
            body = {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}
            return web.json_response(body, status=401)
        query = dict(request.query)
        problem = _check_query(query)
        if problem:
            self.journal.add("rejected", status=400, reason=problem)
            return web.json_response({"err_code": "Bad Request", "err_msg": problem}, status=400,
                                     headers={"dg-error": problem})
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        # what the client offered (permessage-deflate or not): accepted either way, journaled
        extensions = request.headers.get("Sec-WebSocket-Extensions", "")
        self.journal.add("request", query=query, extensions=extensions)
        await _FluxSession(self, ws, request, query).run()
        return ws


def _check_query(query: dict[str, str]) -> str:
    if query.get("model") not in MODELS:
        return f"Invalid model {query.get('model')!r}: Flux needs flux-general-en or flux-general-multi."
    eager = _float(query.get("eager_eot_threshold"))
    eot = _float(query.get("eot_threshold"))
    if eager is not None and not 0.3 <= eager <= 0.9:
        return "eager_eot_threshold must be between 0.3 and 0.9."
    if eot is not None and not 0.5 <= eot <= 0.9:
        return "eot_threshold must be between 0.5 and 0.9."
    if eager is not None and eot is not None and eager > eot:
        return "eager_eot_threshold must not exceed eot_threshold."
    return ""


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


class _FluxSession:
    def __init__(
        self, fake: FakeFlux, ws: web.WebSocketResponse, request: web.Request, query: dict[str, str]
    ) -> None:
        self.fake = fake
        self.ws = ws
        self.request = request
        self.stall_after, self.drop_after = fake.faults.take_stream_faults()
        self.bytes_in = 0
        self.behind_blocks = fake.transcribe_behind_ms // BLOCK_MS
        self.untranscribed: deque[bool] = deque()  # verdicts of blocks received, not yet transcribed
        self.request_id = str(uuid.uuid4())
        self.encoding = query.get("encoding", "linear16")
        self.rate = int(query.get("sample_rate", "16000"))
        self.eager = _float(query.get("eager_eot_threshold")) is not None
        self.eot_timeout_ms = int(query.get("eot_timeout_ms", "5000"))
        self.error = fake.error
        self.blocks = EnergyBlocks(self.rate, self.encoding)
        self.block = self.blocks.block
        self.cursor = 0
        self.seq = 0
        self.turn_index = 0  # the current (or, between turns, the next) turn's index
        self.in_turn = False
        self.turn_start = 0
        self.text = ""
        self.voiced_ms = 0
        self.candidate_start = 0
        self.spoken_ms = 0  # voiced audio in the current turn
        self.silence_run = 0
        self.since_update = 0
        self.eager_sent = False

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.in_turn and self.text:  # cut mid-turn: the replay says these words again
                self.fake.script.appendleft(self.text)
                self.in_turn = False

    async def _run(self) -> None:
        await self._send({"type": "Connected", "request_id": self.request_id})
        journal = self.fake.journal
        while True:
            msg = await receive_or_idle_close(self.ws, self.fake.idle_timeout_s, journal)
            if msg is None:
                return
            if msg.type == WSMsgType.BINARY:
                self.bytes_in += len(msg.data)
                if self.drop_after is not None and self.bytes_in >= self.drop_after:
                    journal.add("dropped", bytes_in=self.bytes_in)
                    transport = self.request.transport
                    if transport is not None:
                        transport.abort()  # no close frame: a dead network path
                    return
                if self.stall_after is not None and self.bytes_in >= self.stall_after:
                    journal.add("stalled", bytes_in=self.bytes_in)
                    await self._stalled()
                    return
                if self.error is not None:
                    code, description = self.error
                    self.fake.error = None
                    journal.add("error", code=code)
                    await self._send({"type": "Error", "code": code, "description": description})
                    await self.ws.close(code=1011, message=code.encode()[:120])
                    return
                await self._audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                kind = data.get("type", "")
                journal.add("control", type=kind)
                if kind == "ForceEndTurn":
                    if self.in_turn:
                        await self._end_turn("manual")
                    else:
                        journal.add("force_end_unanswered")
                elif kind == "Configure":
                    await self._configure(data)
                elif kind == "CloseStream":
                    await self._transcribe(0)
                    if self.in_turn:
                        await self._end_turn("manual")
                    await self.ws.close()
                    journal.add("completed")
                    return
            else:
                break
        journal.add("aborted")

    async def _stalled(self) -> None:
        """Hold the connection open, silent, until the client gives up on it (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STALL_HOLD_S
        transport = self.request.transport
        while loop.time() < deadline and transport is not None and not transport.is_closing():
            if not self.fake.stall_answers_pings:
                await asyncio.sleep(0.02)  # nothing read: aiohttp answers pings in receive()
                continue
            with contextlib.suppress(TimeoutError):
                msg = await self.ws.receive(timeout=0.1)  # pings answered, the rest ignored
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        self.fake.journal.add("stall_ended")
        if transport is not None:
            transport.abort()

    async def _configure(self, data: dict[str, Any]) -> None:
        thresholds = data.get("thresholds") or {}
        eager, eot = thresholds.get("eager_eot_threshold"), thresholds.get("eot_threshold")
        if eager is not None and eot is not None and eager > eot:
            await self._send({"type": "ConfigureFailure", "request_id": self.request_id,
                              "code": "INVALID_THRESHOLDS",
                              "description": "eager_eot_threshold must not exceed eot_threshold"})
            return
        if eager is not None:
            self.eager = True
        await self._send({"type": "ConfigureSuccess", "request_id": self.request_id,
                          "thresholds": thresholds, "keyterms": data.get("keyterms") or []})

    async def _audio(self, data: bytes) -> None:
        self.untranscribed.extend(self.blocks.feed(data))
        await self._transcribe(self.behind_blocks)

    async def _transcribe(self, behind: int) -> None:
        """Transcribe the received blocks but the last ``behind``."""
        while len(self.untranscribed) > behind:
            await self._block(self.untranscribed.popleft())
            self.cursor += self.block

    async def _block(self, voiced: bool) -> None:
        if voiced:
            if self.voiced_ms == 0:
                self.candidate_start = self.cursor
            self.voiced_ms += BLOCK_MS
            self.silence_run = 0
            if not self.in_turn and self.voiced_ms >= NOISE_MS:
                self.in_turn = True
                self.turn_start, self.text, self.spoken_ms = self.candidate_start, self.fake.next_text(), 0
                self.eager_sent, self.since_update = False, 0
                await self._turn_info("StartOfTurn", 0.1)
            if self.in_turn:
                if self.eager_sent:
                    self.eager_sent = False
                    await self._turn_info("TurnResumed", 0.2)
                self.spoken_ms += BLOCK_MS
                self.since_update += BLOCK_MS
                if self.since_update >= UPDATE_EVERY_MS:
                    self.since_update = 0
                    await self._turn_info("Update", 0.1)
            return
        self.voiced_ms = 0
        self.silence_run += BLOCK_MS
        if not self.in_turn:
            await self._idle_update()
            return
        confident = not self.text.endswith("...")
        fake = self.fake
        self.since_update += BLOCK_MS
        if self.eager and confident and not self.eager_sent and self.silence_run >= fake.eager_eot_after_ms \
                and self.silence_run < fake.eot_after_ms:
            self.eager_sent = True
            self._all_heard()  # the EndOfTurn that may follow says the same
            self.since_update = 0
            await self._turn_info("EagerEndOfTurn", 0.6)
        if confident and self.silence_run >= fake.eot_after_ms:
            await self._end_turn("model")
        elif self.silence_run >= self.eot_timeout_ms:
            await self._end_turn("timeout")
        elif self.since_update >= UPDATE_EVERY_MS:
            # "regardless of transcript updates, unless a state change has occurred": the
            # turn's pause gets its Updates too
            self.since_update = 0
            await self._turn_info("Update", 0.1)

    async def _idle_update(self) -> None:
        """Between turns: an Update with nothing said, if this fake plays them."""
        if not self.fake.updates_outside_turns:
            return
        self.since_update += BLOCK_MS
        if self.since_update >= UPDATE_EVERY_MS:
            self.since_update = 0
            await self._turn_info("Update", 0.0)

    def _all_heard(self) -> None:
        self.spoken_ms = max(self.spoken_ms, len(self.text.split()) * MS_PER_WORD)

    async def _end_turn(self, trigger: str) -> None:
        self._all_heard()
        await self._turn_info("EndOfTurn", 0.9, trigger=trigger)
        self.in_turn, self.text, self.eager_sent = False, "", False
        self.turn_index += 1  # documented: right after EndOfTurn
        self.spoken_ms, self.since_update, self.turn_start = 0, 0, self.cursor + self.block

    def _words(self) -> list[str]:
        words = self.text.split()
        return words[: max(1, min(len(words), self.spoken_ms // MS_PER_WORD))]

    async def _turn_info(self, event: str, confidence: float, trigger: str | None = None) -> None:
        words = self._words() if event != "StartOfTurn" and self.in_turn else []
        message: dict[str, Any] = {
            "type": "TurnInfo",
            "request_id": self.request_id,
            "event": event,
            "turn_index": self.turn_index,
            "audio_window_start": self.turn_start / self.rate,
            "audio_window_end": (self.cursor + self.block) / self.rate,
            "transcript": " ".join(words),
            "words": [{"word": w, "confidence": 0.97} for w in words],
            "end_of_turn_confidence": confidence,
        }
        if trigger is not None:
            message["trigger"] = trigger
        await self._send(message)

    async def _send(self, message: dict[str, Any]) -> None:
        message["sequence_id"] = self.seq
        self.seq += 1
        self.fake.journal.add("sent", type=message["type"], event=message.get("event"),
                              text=message.get("transcript"), trigger=message.get("trigger"),
                              turn_index=message.get("turn_index"),
                              audio_end=message.get("audio_window_end"))
        await self.ws.send_str(json.dumps(message))
