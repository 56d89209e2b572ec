"""Deepgram live STT on deepgram-sdk 7.x (``listen.v1.connect``).

Caller audio goes out as mu-law 8 kHz (the call's own codec, so nothing is lost or resampled)
with interim results, endpointing, utterance-end and VAD events on. ``finalize()`` sends
Finalize for a fast end of turn. While no audio flows (e.g. the engine pauses) KeepAlive keeps
the socket. A dropped or stalled socket is reopened and the audio not yet covered by a final
result is replayed, so the caller's words survive; after ``max_reconnects`` failures the
transcript stream raises ProviderError and the engine fails over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from deepgram import AsyncDeepgramClient
from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from deepgram.listen.v1.types import ListenV1Error, ListenV1Results, ListenV1UtteranceEnd

from bridge.audio.g711 import pcm_to_ulaw
from bridge.providers.base import Transcript
from bridge.providers.stt.deepgram_errors import NAME
from bridge.providers.stt.deepgram_session import DeepgramSession, environment, open_socket
from bridge.settings import Secrets, Settings

__all__ = ["DeepgramSTT", "DeepgramStream", "create", "environment"]
# Deepgram answers audio with Results about once per second of audio; a few frames of audio
# (the silence after a final, when the caller then goes quiet) are owed no reply at all.
REPLY_OWED_AFTER_S = 1.0
# Deepgram does not promise a from_finalize reply "if there is no significant amount of audio
# data to process" (developers.deepgram.com/docs/finalize). With less unfinalized audio than
# this, finalize() answers itself instead of waiting for a reply that may never come.
FINALIZE_MIN_PENDING_S = 0.25


class DeepgramSTT:
    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        url: str = "",
        model: str = "nova-3",
        language: str = "en-US",
        encoding: str = "mulaw",
        endpointing_ms: int = 300,
        utterance_end_ms: int = 1000,
        connect_timeout_s: float = 3.0,
        stall_timeout_s: float = 6.0,
        keepalive_s: float = 4.0,
        max_reconnects: int = 2,
    ) -> None:
        if encoding not in {"mulaw", "linear16"}:
            raise ValueError(f"unsupported Deepgram encoding {encoding!r}")
        self._client = AsyncDeepgramClient(api_key=api_key, environment=environment(url))
        self.encoding = encoding
        self.options: dict[str, Any] = {
            "model": model,
            "language": language,
            "encoding": encoding,
            "sample_rate": 8000,
            "channels": 1,
            "interim_results": True,
            "endpointing": endpointing_ms,
            "utterance_end_ms": utterance_end_ms,
            "vad_events": True,
            "smart_format": True,
            "punctuate": True,
        }
        self.connect_timeout_s = connect_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.keepalive_s = keepalive_s
        self.max_reconnects = max_reconnects

    async def open(self) -> DeepgramStream:
        stream = DeepgramStream(self)
        await stream.start()
        return stream

    async def connect(self, stack: contextlib.AsyncExitStack) -> AsyncV1SocketClient:
        """Open one live socket inside ``stack``; ProviderError (never the SDK's) on failure."""
        return await open_socket(
            NAME, stack, self._client.listen.v1.connect(**self.options), self.connect_timeout_s
        )


class DeepgramStream(DeepgramSession[AsyncV1SocketClient]):
    """One caller's live transcription (implements base.SttStream)."""

    name = NAME
    refused_hint = ": check stt.deepgram_encoding"

    def __init__(self, stt: DeepgramSTT) -> None:
        mulaw = stt.encoding == "mulaw"
        super().__init__(stt, 1 if mulaw else 2)
        self._stt = stt
        self._encode = pcm_to_ulaw if mulaw else bytes
        self._watch: asyncio.Timeout | None = None  # stall watchdog of the current read loop
        self._utterance_open = False  # finals with words since the last end of utterance
        self._finalize_owed = 0  # Finalize messages whose reply (an end of utterance) is expected
        self._answered_locally = 0  # Finalize messages answered here; a late reply is not an end
        self._reply_due = False  # a reply is owed: enough audio since the last message
        self._unanswered = 0  # audio bytes sent since the last message received
        self._reply_after = int(REPLY_OWED_AFTER_S * 8000) * (1 if mulaw else 2)

    # ---- SttStream --------------------------------------------------------------------

    async def send(self, pcm: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing:
            return
        data = self._even(pcm)
        if not data:
            return
        audio = self._encode(data)
        if not await self._send_audio(audio):
            return  # no socket, or a dead one: the replay on the next socket sends it
        self._unanswered += len(audio)
        if self._unanswered >= self._reply_after:
            self._arm()

    async def finalize(self) -> None:
        """Exactly one end-of-utterance transcript follows each call: Deepgram's from_finalize
        reply, or, when too little audio is pending for Deepgram to owe one, our own. The stall
        watchdog is not armed: an unanswered Finalize is normal, not a dead socket."""
        if self._failed is not None:
            raise self._failed
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.send_finalize()
        if self._replay.pending_s < FINALIZE_MIN_PENDING_S and not self._finalize_owed:
            self._answered_locally += 1
            self._utterance_open = False
            self._queue.put_nowait(Transcript("", True, True, 0.0))
        else:
            self._finalize_owed += 1

    # ---- internals --------------------------------------------------------------------

    def _arm(self) -> None:
        """A second of audio went out: some message must come back within the stall timeout."""
        self._reply_due = True
        watch = self._watch
        if watch is not None and watch.when() is None:
            watch.reschedule(asyncio.get_running_loop().time() + self._stt.stall_timeout_s)

    async def _read(self, conn: AsyncV1SocketClient) -> str:
        """Consume messages until the socket ends or stalls; returns why it ended."""
        try:
            async with asyncio.timeout(None) as watch:
                self._watch = watch
                if self._reply_due:  # audio went out before this loop started
                    self._arm()
                while True:
                    message = await conn.recv()
                    self._reply_due = False
                    self._unanswered = 0
                    watch.reschedule(None)
                    if isinstance(message, ListenV1Error):
                        return "error message from Deepgram"
                    self._handle(message)
        except TimeoutError:
            return f"no reply for {self._stt.stall_timeout_s:g} s"
        finally:
            self._watch = None

    def _handle(self, message: Any) -> None:
        if isinstance(message, ListenV1Results):
            self._got_result = True
            alts = message.channel.alternatives
            text = alts[0].transcript.strip() if alts else ""
            confidence = float(alts[0].confidence) if alts else 0.0
            is_final = bool(message.is_final)
            end = is_final and bool(message.speech_final or message.from_finalize)
            if is_final:
                self._replay.finalized(message.start, message.duration)
                self._utterance_open = self._utterance_open or bool(text)
            if end and message.from_finalize and not self._finalize_owed and self._answered_locally:
                self._answered_locally -= 1  # that Finalize was answered here already
                end = False
            elif end and not text and not message.from_finalize and not self._utterance_open:
                # an empty speech_final (noise, or the gap before the words' final) with no
                # words pending ends nothing: "yes" would otherwise be cut off
                end = False
            if text or end:
                self._queue.put_nowait(Transcript(text, is_final, end, confidence))
            if end:
                self._utterance_open = False
                self._finalize_owed = max(0, self._finalize_owed - 1)
        elif isinstance(message, ListenV1UtteranceEnd) and self._utterance_open:
            # words were finalized but no speech_final came (noise): this closes the turn
            self._utterance_open = False
            self._queue.put_nowait(Transcript("", True, True, 0.0))

    async def _resume(self, conn: AsyncV1SocketClient, replay: bytes) -> None:
        if replay:
            await conn.send_media(replay)
        if self._finalize_owed:
            await conn.send_finalize()  # the lost socket's Finalize, for the same audio

    def _resumed(self, replay: bytes) -> None:
        if replay:
            self._last_audio = time.monotonic()
            self._unanswered = len(replay)
            self._reply_due = self._unanswered >= self._reply_after

    async def _keep_alive(self) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.send_keep_alive()
                self._last_audio = time.monotonic()


def create(settings: Settings, secrets: Secrets) -> DeepgramSTT:
    s = settings.stt
    return DeepgramSTT(
        api_key=secrets.require("deepgram_api_key"),
        url=s.deepgram_url,
        model=s.deepgram_model,
        language=s.language,
        encoding=s.deepgram_encoding,
        endpointing_ms=s.deepgram_endpointing_ms,
        utterance_end_ms=s.deepgram_utterance_end_ms,
        connect_timeout_s=s.connect_timeout_s,
        stall_timeout_s=s.stall_timeout_s,
        keepalive_s=s.deepgram_keepalive_s,
        max_reconnects=s.max_reconnects,
    )
