"""Deepgram live STT (``/v1/listen``; the socket is deepgram_live.py's, see there why not the
SDK's connect).

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
import logging
import time
from collections import deque
from typing import Any

from bridge.audio.g711 import UlawPcm, as_ulaw
from bridge.providers.base import Transcript
from bridge.providers.stt.deepgram_errors import NAME
from bridge.providers.stt.deepgram_live import LiveSocket, live_socket
from bridge.providers.stt.deepgram_session import CLOSE_WAIT_S, DeepgramSession, environment, open_socket
from bridge.settings import Secrets, Settings

log = logging.getLogger(__name__)
__all__ = ["DeepgramSTT", "DeepgramStream", "create", "environment"]
# Deepgram answers audio with Results about once per second of audio; a few frames of audio
# (the silence after a final, when the caller then goes quiet) are owed no reply at all.
REPLY_OWED_AFTER_S = 1.0
# Deepgram does not promise a from_finalize reply "if there is no significant amount of audio
# data to process" (developers.deepgram.com/docs/finalize: the reply "typically occurs when
# there is a noticeable amount of audio buffered"). With less audio to process than this,
# finalize() answers itself instead of waiting for a reply that may never come.
FINALIZE_MIN_PENDING_S = 0.25
# How far past a locally answered Finalize's place a reply may end and still be its answer
# (Deepgram reports times to the audio it processed; the fake, to its 20-40 ms block). Less
# than FINALIZE_MIN_PENDING_S, the least audio between such a Finalize and an owed one.
GHOST_REPLY_SLACK_S = 0.1


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
        self._api_key = api_key
        self._ws_base = environment(url).production  # validates the URL too
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

    async def connect(self, stack: contextlib.AsyncExitStack) -> LiveSocket:
        """Open one live socket inside ``stack``; ProviderError on failure."""
        socket = live_socket(self._ws_base, self.options, self._api_key, CLOSE_WAIT_S)
        return await open_socket(NAME, stack, socket, self.connect_timeout_s)


class DeepgramStream(DeepgramSession[LiveSocket]):
    """One caller's live transcription (implements base.SttStream)."""

    name = NAME
    refused_hint = ": check stt.deepgram_encoding"

    def __init__(self, stt: DeepgramSTT) -> None:
        mulaw = stt.encoding == "mulaw"
        super().__init__(stt, 1 if mulaw else 2)
        self._stt = stt
        self._mulaw = mulaw
        self._watch: asyncio.Timeout | None = None  # stall watchdog of the current read loop
        self._utterance_open = False  # finals with words since the last end of utterance
        self._finalize_owed = 0  # Finalize messages whose reply (an end of utterance) is expected
        # The Finalize messages sent on this socket whose reply has not come, in order: their
        # place in the socket's audio (s) and whether it was answered here (a reply to such a
        # one, if Deepgram sends it, is late and ends nothing). Bounded: a Finalize Deepgram
        # never answers falls off.
        self._sent_finalizes: deque[tuple[float, bool]] = deque(maxlen=16)
        # The owed Finalizes' places in the stream's audio (s), oldest first (as many as
        # _finalize_owed): a reconnect resends each one THERE in the replay, so their ends come
        # in audio order, a turn's before the next turn's words
        self._owed_places: deque[float] = deque()
        self._socket_bytes = 0  # audio bytes sent on this socket (replay included)
        self._reply_due = False  # a reply is owed: enough audio since the last message
        self._unanswered = 0  # audio bytes sent since the last message received
        self._reply_after = int(REPLY_OWED_AFTER_S * 8000) * (1 if mulaw else 2)
        # audio bytes sent on this socket since the last Finalize sent on it, by finalize() or
        # a reconnect's _resume (None: none yet): what the next Finalize would have to process
        self._since_finalize: int | None = None

    # ---- SttStream --------------------------------------------------------------------

    async def send(self, pcm: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing:
            return
        if self._mulaw and type(pcm) is UlawPcm and not self._carry:
            audio = as_ulaw(pcm)  # a Plivo mu-law frame goes out as the caller sent it
        else:
            data = self._even(pcm)
            if not data:
                return
            audio = as_ulaw(data) if self._mulaw else data
        # Counted sent or not: audio not sent now is replayed on the next socket, and the
        # Finalize that covers it is resent there (_resume)
        if self._since_finalize is not None:
            self._since_finalize += len(audio)
        if not await self._send_audio(audio):
            return  # no socket, or a dead one: the replay on the next socket sends it
        self._socket_bytes += len(audio)
        self._unanswered += len(audio)
        if self._unanswered >= self._reply_after:
            self._arm()

    async def finalize(self) -> None:
        """Exactly one end-of-utterance transcript follows each call: Deepgram's from_finalize
        reply, or, when too little audio is left for Deepgram to owe one, our own. What is left
        is the audio since the LAST Finalize (whoever sent it, still unanswered or not), not
        all the audio no final covers yet: a Finalize 100 ms after another has 100 ms to
        process, and Deepgram may answer only the first. It is still sent (a flush costs
        nothing and finalizes that tail now, if Deepgram hears words in it); a reply to it, if
        one comes, is recognised in _results and ends nothing. The stall watchdog is not
        armed: an unanswered Finalize is normal, not a dead socket."""
        if self._failed is not None:
            raise self._failed
        pending_s = self._replay.pending_s
        conn = self._conn
        if conn is not None and self._since_finalize is not None:
            # with no socket, the next one gets the replay and ONE Finalize for all of it
            pending_s = min(pending_s, self._since_finalize / self._replay.bytes_per_second)
        sent_at: float | None = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.send_finalize()
                sent_at = self._socket_bytes / self._replay.bytes_per_second
            self._since_finalize = 0
        answered_here = pending_s < FINALIZE_MIN_PENDING_S
        if sent_at is not None:
            self._sent_finalizes.append((sent_at, answered_here))
        if answered_here:
            self._utterance_open = False
            self._queue.put_nowait(Transcript("", True, True, 0.0))
        else:
            self._finalize_owed += 1
            self._owed_places.append(self._replay.end_s)

    # ---- internals --------------------------------------------------------------------

    def _arm(self) -> None:
        """A second of audio went out: some message must come back within the stall timeout."""
        self._reply_due = True
        watch = self._watch
        if watch is not None and watch.when() is None:
            watch.reschedule(asyncio.get_running_loop().time() + self._stt.stall_timeout_s)

    async def _read(self, conn: LiveSocket) -> str:
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
                    kind = message.get("type")
                    if kind == "Error":
                        return "error message from Deepgram"
                    if kind == "Results":
                        self._results(message)
                    elif kind == "UtteranceEnd" and self._utterance_open:
                        # words were finalized but no speech_final came (noise): this closes the turn
                        self._utterance_open = False
                        self._queue.put_nowait(Transcript("", True, True, 0.0))
        except TimeoutError:
            return f"no reply for {self._stt.stall_timeout_s:g} s"
        finally:
            self._watch = None

    def _results(self, message: dict[str, Any]) -> None:
        self._got_result = True
        try:
            alts = message["channel"]["alternatives"]
            text = str(alts[0]["transcript"]).strip() if alts else ""
            confidence = float(alts[0].get("confidence", 0.0)) if alts else 0.0
            start, duration = float(message.get("start", 0.0)), float(message.get("duration", 0.0))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            log.warning("deepgram Results message without a usable transcript: skipped")
            return
        is_final = message.get("is_final") is True
        from_finalize = message.get("from_finalize") is True
        if not from_finalize and self._finalize_owed:
            self._answer_skipped(start + duration)
        end = is_final and (message.get("speech_final") is True or from_finalize)
        if is_final:
            self._replay.finalized(start, duration)
            self._utterance_open = self._utterance_open or bool(text)
        if end and from_finalize and self._is_ghost_reply(start + duration):
            end = False  # the late reply to a Finalize answered here already
        elif end and not text and not from_finalize and not self._utterance_open:
            # an empty speech_final (noise, or the gap before the words' final) with no
            # words pending ends nothing: "yes" would otherwise be cut off
            end = False
        if text or end:
            self._queue.put_nowait(Transcript(text, is_final, end, confidence))
        if end:
            self._utterance_open = False
            self._finalize_owed = max(0, self._finalize_owed - 1)
            self._settle_places()

    def _answer_skipped(self, end_s: float) -> None:
        """A result for audio past the place of a Finalize still owed, and no from_finalize reply
        to it: Deepgram processes in order, so that Finalize got none (its page: a reply "may"
        come, "typically" with "a noticeable amount of audio", more than our guess here) and will
        get none. Answered here, before this result: the end keeps its place, ahead of the next
        speech's words (else the engine takes that speech's end as the one it waits for)."""
        # ends answer the oldest first (a speech_final too): the ones still owed are the last
        owed = [entry for entry in self._sent_finalizes if not entry[1]]
        for entry in owed[max(0, len(owed) - self._finalize_owed):]:
            at = entry[0]
            if not self._finalize_owed or end_s <= at + GHOST_REPLY_SLACK_S:
                return
            self._sent_finalizes.remove(entry)
            self._finalize_owed -= 1
            self._settle_places()
            self._utterance_open = False
            self._queue.put_nowait(Transcript("", True, True, 0.0))

    def _settle_places(self) -> None:
        """An owed Finalize was answered (ends come in order: the oldest's)."""
        while len(self._owed_places) > self._finalize_owed:
            self._owed_places.popleft()

    def _is_ghost_reply(self, end_s: float) -> bool:
        """Is a from_finalize reply whose audio ends at ``end_s`` (this socket's time) the late
        answer to a Finalize answered here? Replies come in order, so it answers the oldest
        Finalize still waiting, unless it ends past where one answered here was sent: that one
        was never answered (Deepgram's documented "may") and is forgotten. An owed Finalize
        follows the one before it by at least FINALIZE_MIN_PENDING_S of audio, more than the
        slack, so the two cannot be confused."""
        sent = self._sent_finalizes
        while (sent and sent[0][1] and end_s > sent[0][0] + GHOST_REPLY_SLACK_S
               and (len(sent) > 1 or self._finalize_owed)):
            sent.popleft()
        if not sent:
            return False
        return sent.popleft()[1]

    async def _resume(self, conn: LiveSocket, replay: bytes) -> None:
        """The replay, with each Finalize the lost socket owed resent at its own place in it
        (where it was sent, or meant to be): Deepgram answers them in audio order, so a turn's
        end comes before the next turn's words (one Finalize after all of it, with the others
        answered here at once, put an empty end AHEAD of the first turn's words). One with too
        little audio before it to be sure of a reply, ahead of any owed one, is answered here;
        after an owed one it stays owed (answered here once Deepgram's results pass it)."""
        self._socket_bytes = 0
        self._since_finalize = None  # a new socket: no Finalize on it yet
        self._sent_finalizes.clear()  # nor a late reply to the lost socket's
        owed = self._finalize_owed
        places = list(self._owed_places)[-owed:] if owed else []
        while len(places) < owed:
            places.insert(0, places[0] if places else self._replay.end_s)
        # the state changes only once all of it went out: a socket that dies under the replay
        # leaves every owed Finalize, in its place, to the next one
        kept_places: deque[float] = deque()
        local = 0
        bps, width = self._replay.bytes_per_second, self._replay.sample_bytes
        least = FINALIZE_MIN_PENDING_S * bps
        done = last = kept = 0  # replay bytes sent; where the last Finalize went; owed ones
        for place in places:
            at = round((place - self._replay.connection_offset_s) * bps) // width * width
            at = max(done, min(len(replay), at))
            if at > done:
                await conn.send_media(replay[done:at])
                done = self._socket_bytes = at
            await conn.send_finalize()
            here = not kept and at - last < least
            self._sent_finalizes.append((at / bps, here))
            last = at
            if here:
                local += 1
            else:
                kept += 1
                kept_places.append(place)
        if done < len(replay):
            await conn.send_media(replay[done:])
            self._socket_bytes = len(replay)
        if places:
            self._since_finalize = len(replay) - last
        self._finalize_owed, self._owed_places = kept, kept_places
        for _ in range(local):  # all ahead of any owed one: in order, before its reply
            self._queue.put_nowait(Transcript("", True, True, 0.0))
        if owed and not kept:
            self._utterance_open = False

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
