"""Deepgram Flux STT (``/v2/listen``): speech recognition that detects the end of the
caller's turn itself.

The socket is deepgram_live.py's (the request deepgram-sdk 7.x ``listen.v2.connect`` makes,
pinned by a test against the SDK's encoder, without its permessage-deflate on audio and its
pydantic parse of every message); messages are read as dicts with the fields of the SDK's
``ListenV2TurnInfo`` / ``ListenV2FatalError``.

Flux's TurnInfo events become Transcripts: Update / StartOfTurn are interims (the turn's
cumulative transcript), EndOfTurn is the final and the end of the utterance (so the engine
ends the turn on it), EagerEndOfTurn and TurnResumed are interims carrying ``event``
(base.EAGER_END_OF_TURN / TURN_RESUMED) for an engine that prepares its reply early.
``finalize()`` sends ForceEndTurn; as with v1's Finalize, exactly one end of utterance follows
each call (our own when no turn is open, since no reply is promised then). A turn is open from
StartOfTurn to EndOfTurn or our ForceEndTurn, as Flux's state machine has it
(developers.deepgram.com/docs/flux/state: Initial -> StartOfTurn -> TurnOngoing <-> AwaitingEnd
-> EndOfTurn or ForceEndTurn -> Initial). Update means "the turn state hasn't changed" and comes
about every 0.25 s of audio "regardless of transcript updates", so it may come between turns:
only StartOfTurn opens one (EagerEndOfTurn / TurnResumed come only after it; and, still on their
way after our ForceEndTurn, must not reopen the turn it ended). ``turn_index`` adds nothing: it
moves on right after EndOfTurn, so Updates between turns already carry the next turn's. v2 has no
KeepAlive message: while no audio flows, mu-law silence keeps the socket open. A dropped socket
is reopened and the audio since the last EndOfTurn replayed; an ``Error`` message or a close
1008 fails the stream at once.

Across a reconnect (the counterpart of v1's Finalize owed with the replay): a ForceEndTurn the
lost socket owed an EndOfTurn for, or one that could not be sent (no socket, or a dead one),
whether or not a turn was open in our view, since the caller may have begun speaking when the
socket went, is owed to the next socket: it gets the replay and ONE ForceEndTurn, placed in the
replay where the latest of them was sent (or meant to be): speech begun after it is the next
turn, as on a healthy socket. Whether the replay up to there holds a turn is Flux's to say: a
StartOfTurn that began before it opens the turn whose EndOfTurn answers it (ended by that
ForceEndTurn, or by Flux itself when the replay's pause was long enough or the ForceEndTurn came
before the replay was transcribed, "ends the turn on the audio transcribed so far"); a TurnInfo
past that point with no such turn (an Update between turns, or the StartOfTurn of later speech)
says there was none, and the client answers, empty, before that later turn's events; with no
word from Flux at all, the client answers after the replay's length plus ``replay_turn_wait_s``
(unless that socket is lost first: then the next one decides). A ForceEndTurn sent after the
reconnect with no turn open in our view waits for the same word (the replay's turn may not be
open yet), and one sent while the new socket is being handed over waits for it (the lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from typing import Any

from bridge.audio.g711 import UlawPcm, as_ulaw
from bridge.providers.base import EAGER_END_OF_TURN, TURN_RESUMED, ProviderError, Transcript
from bridge.providers.stt.deepgram_live import FLUX_PATH, LiveSocket, live_socket
from bridge.providers.stt.deepgram_session import CLOSE_WAIT_S, DeepgramSession, environment, open_socket
from bridge.settings import Secrets, Settings

log = logging.getLogger(__name__)
NAME = "deepgram-flux"
SILENCE_FRAME = b"\xff" * 160  # 20 ms of mu-law silence
EVENTS = {"EagerEndOfTurn": EAGER_END_OF_TURN, "TurnResumed": TURN_RESUMED}
# After a reconnect, how long past the replay's own length (Flux transcribes at least as fast as
# real time) a resent ForceEndTurn waits for a sign of whether the replay holds a turn
REPLAY_TURN_WAIT_S = 1.0
# The stall watchdog. Flux promises no message between turns, so its silence there proves
# nothing; but any RFC 6455 server answers a Ping with a Pong once it has read what came before
# it: WebSocket pings every PING_INTERVAL_S, a Pong missing PING_TIMEOUT_S ends the socket (a path
# dead without FIN or close was noticed only by websockets' 20 s + 20 s before). And in a turn,
# Flux sends a TurnInfo "for approximately every 0.25 seconds of transcribed audio, regardless of
# transcript updates" (its state page): TURN_SILENT_S of audio sent in an open turn, over as
# long a time, with no TurnInfo back is a stalled transcription behind a live socket (audio sent
# in a burst is answered as Flux transcribes it). Either way: reconnect + replay.
PING_INTERVAL_S = 2.0
PING_TIMEOUT_S = 3.0
TURN_SILENT_S = 3.0


class FluxSTT:
    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        url: str = "",
        model: str = "flux-general-en",
        eot_threshold: float | None = None,
        eager_eot_threshold: float | None = None,
        eot_timeout_ms: int = 5000,
        connect_timeout_s: float = 3.0,
        keepalive_s: float = 4.0,
        max_reconnects: int = 2,
        replay_turn_wait_s: float = REPLAY_TURN_WAIT_S,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
        turn_silent_s: float = TURN_SILENT_S,
    ) -> None:
        self._api_key = api_key
        self._ws_base = environment(url).production  # validates the URL too
        self.options: dict[str, Any] = {
            "model": model,
            "encoding": "mulaw",
            "sample_rate": 8000,
            "eot_timeout_ms": eot_timeout_ms,
        }
        if eot_threshold is not None:
            self.options["eot_threshold"] = eot_threshold
        if eager_eot_threshold is not None:  # turns on EagerEndOfTurn / TurnResumed
            self.options["eager_eot_threshold"] = eager_eot_threshold
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.max_reconnects = max_reconnects
        self.replay_turn_wait_s = replay_turn_wait_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.turn_silent_s = turn_silent_s

    async def open(self) -> FluxStream:
        stream = FluxStream(self)
        await stream.start()
        return stream

    async def connect(self, stack: contextlib.AsyncExitStack) -> LiveSocket:
        socket = live_socket(self._ws_base, self.options, self._api_key, CLOSE_WAIT_S, FLUX_PATH,
                             self.ping_interval_s, self.ping_timeout_s)
        return await open_socket(NAME, stack, socket, self.connect_timeout_s)


class FluxStream(DeepgramSession[LiveSocket]):
    """One caller's Flux session (implements base.SttStream)."""

    name = NAME

    def __init__(self, stt: FluxSTT) -> None:
        super().__init__(stt, 1)
        self._stt = stt
        self._turn_open = False  # between StartOfTurn and EndOfTurn
        self._force_owed = 0  # ForceEndTurn sent while a turn was open: its EndOfTurn is due
        # ForceEndTurn answered here (no turn open); a manual EndOfTurn then is its late answer
        # (a StartOfTurn was on its way): it ends nothing
        self._answered_locally = 0
        # ForceEndTurn not sent (no socket, or a dead one) while no turn was open in our view:
        # the caller may have begun one; the next socket decides, with the replay
        self._force_unsent = 0
        # After a reconnect, until Flux shows whether the replay holds a turn: the replay's end
        # in this socket's audio time (s), the ForceEndTurns sent with no turn open in our view
        # that wait for that answer, and the bound on the wait
        self._replay_end_s: float | None = None
        self._replay_owed = 0
        # the whole replay's end (s): a ForceEndTurn sent after the reconnect went after all of
        # it, so Flux's word on all of it decides (_replay_end_s moves there); when the wait began
        self._replay_full_s = 0.0
        self._replay_wait_from = 0.0
        self._replay_wait: asyncio.TimerHandle | None = None
        # Stream time (the replay buffer's clock) of the latest ForceEndTurn still owed an
        # answer: a reconnect resends it THERE in the replay, not after all of it, so speech
        # begun after it (still while down) is the next turn, as on a healthy socket
        self._owed_at = 0.0
        # ForceEndTurns sent with no turn open in our view, each waiting for the Pong of the Ping
        # sent after it (oldest first): the Pong says this socket is alive and Flux has read it
        # (and the audio before it), so Flux owes it nothing unless a turn ends before the Pong;
        # no Pong, a dead socket: the next one decides, with the replay (_resume)
        self._unconfirmed: deque[int] = deque()
        # each one's (serial of the _owed_at it set, _owed_at before it)
        self._owed_before: dict[int, tuple[int, float]] = {}
        self._owed_serial = 0  # counts the places _owed_at was set to
        self._confirm_seq = 0
        self._socket_epoch = 0  # moves on with each new socket: a Pong of a lost one is moot
        self._unheard = 0  # audio bytes sent in an open turn since Flux's last TurnInfo
        # when the first of them went (loop time): audio sent is not audio Flux could have
        # answered yet (a late burst goes out at once), so the bound is on time too
        self._unheard_since = 0.0

    # ---- SttStream --------------------------------------------------------------------

    async def send(self, pcm: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing:
            return
        if type(pcm) is UlawPcm and not self._carry:
            await self._send_audio(as_ulaw(pcm))  # a Plivo mu-law frame as the caller sent it
            return
        data = self._even(pcm)
        if data:
            await self._send_audio(as_ulaw(data))

    async def finalize(self) -> None:
        """ForceEndTurn; exactly one end of utterance follows (ours if no turn is open)."""
        if self._failed is not None:
            raise self._failed
        async with self._lock:  # not in the middle of a reconnect's hand-over (_resume)
            sent = False
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.send_force_end_turn()
                    sent = True
            if self._turn_open or not sent or self._replay_end_s is not None:
                self._owe_at(self._replay.end_s)  # where the next socket would resend it
            if self._turn_open:  # owed; if it did not go out, the next socket gets it (_resume)
                self._force_owed += 1
                self._turn_open = False  # ended by it: a second one before the EndOfTurn gets none
            elif not sent and not self._closing:
                # the turn may be opening unseen (its StartOfTurn lost with the socket, or its
                # audio not sent yet): the replay will tell
                self._force_unsent += 1
            elif sent and self._replay_end_s is not None:
                self._replay_owed += 1  # Flux has not yet said whether the replay holds a turn
                if self._replay_end_s < self._replay_full_s:  # sent after all of it
                    self._replay_end_s = self._replay_full_s
                    self._arm_replay_wait()
            elif not sent or conn is None:  # closing: nothing more comes from Flux
                self._answer_here(1, sent=False)
            else:  # no turn: Flux owes no EndOfTurn (not promised): answered here once the
                # socket is shown alive (else a turn opening unseen, its StartOfTurn lost on a
                # path dead without FIN, would come back after the reconnect as an extra end)
                await self._confirm(conn)

    async def close(self) -> None:
        self._stop_replay_wait()
        await super().close()

    async def _send_audio(self, audio: bytes) -> bool:
        conn = self._conn
        sent = await super()._send_audio(audio)
        if sent and self._turn_open and conn is not None:
            now = asyncio.get_running_loop().time()
            if not self._unheard:
                self._unheard_since = now
            self._unheard += len(audio)
            # turn_silent_s of audio AND of time with no TurnInfo: a burst of audio sent at
            # once (caller frames delivered late) is answered as Flux transcribes it
            silent_s = self._stt.turn_silent_s
            if self._unheard >= silent_s * self._replay.bytes_per_second \
                    and now - self._unheard_since >= silent_s:
                self._unheard = 0
                log.warning("deepgram-flux: no TurnInfo for %.1f s of audio in an open turn: "
                            "the socket is dropped and reopened", self._stt.turn_silent_s)
                conn.abort()  # the read loop sees it: reconnect + replay
        return sent

    async def _confirm(self, conn: LiveSocket) -> None:
        """A Ping after the ForceEndTurn: its Pong answers it here, unless a turn ends first."""
        try:
            pong = await conn.ping()
        except Exception:  # the socket is gone: owed to the next one, with the replay
            self._force_unsent += 1
            return
        self._confirm_seq += 1
        token, epoch = self._confirm_seq, self._socket_epoch
        self._unconfirmed.append(token)
        # owed until the Pong: the latest owed place, until settled (then the one before it)
        self._owed_before[token] = (self._owed_serial + 1, self._owed_at)
        self._owe_at(self._replay.end_s)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._stt.ping_timeout_s, self._pong_missing, conn, token, epoch)
        pong.add_done_callback(lambda done: self._ponged(done, token, epoch, timer))

    def _ponged(
        self, done: asyncio.Future[float], token: int, epoch: int, timer: asyncio.TimerHandle
    ) -> None:
        timer.cancel()
        if done.cancelled() or done.exception() is not None:
            return  # the socket closed: the read loop reconnects, _resume takes it
        if epoch == self._socket_epoch and token in self._unconfirmed:
            self._settle(token)
            self._answer_here(1)

    def _settle(self, token: int) -> None:
        """A ForceEndTurn awaiting its Pong is answered: the place a reconnect would resend
        the latest owed one goes back to where it was before it (if none came since)."""
        self._unconfirmed.remove(token)
        serial, before = self._owed_before.pop(token)
        if serial == self._owed_serial:  # no ForceEndTurn owed since
            self._owed_at = before

    def _owe_at(self, at: float) -> None:
        self._owed_at = at
        self._owed_serial += 1

    def _pong_missing(self, conn: LiveSocket, token: int, epoch: int) -> None:
        if self._closing or epoch != self._socket_epoch or token not in self._unconfirmed:
            return
        log.warning("deepgram-flux: no Pong %.1f s after a ForceEndTurn: the socket is dropped and "
                    "reopened", self._stt.ping_timeout_s)
        conn.abort()

    async def _disconnect(self) -> None:
        # The socket is gone: Flux's silence from now on says nothing about the replay, so the
        # wait's bound must not answer the ForceEndTurns waiting for its word; they stay owed
        # (_replay_owed) and the next socket decides, with the replay (_resume)
        self._stop_replay_wait()
        await super()._disconnect()

    # ---- internals --------------------------------------------------------------------

    async def _read(self, conn: LiveSocket) -> str:
        """Consume messages until the socket ends (the session maps a close); returns why.
        Connected, ConfigureSuccess/Failure and Warning need nothing from us."""
        while True:
            message = await conn.recv()
            kind = message.get("type")
            if kind == "Error":
                code, description = str(message.get("code", "")), str(message.get("description", ""))
                self._refused = ProviderError(NAME, f"error {code[:40]}: {description[:80]}")
                return "error message"
            if kind == "TurnInfo":
                self._got_result = True
                self._unheard = 0
                self._handle(message)

    def _handle(self, info: dict[str, Any]) -> None:
        event = info.get("event")
        if not isinstance(event, str) or not event:
            log.warning("deepgram-flux TurnInfo without a usable event: skipped")
            return
        # each field on its own: one odd number must not lose a turn's end
        transcript = info.get("transcript")
        text = transcript.strip() if isinstance(transcript, str) else ""
        window_end = _number(info.get("audio_window_end"))
        confidence = _number(info.get("end_of_turn_confidence"))
        replays_turn = self._replay_end_s is not None and self._replay_turn(
            event, _number(info.get("audio_window_start")), window_end
        )
        if event == "EndOfTurn":
            self._turn_open = False
            self._replay.finalized(0.0, window_end)
            if self._force_owed:
                self._force_owed -= 1
            elif self._unconfirmed:
                # a turn ended before the Pong of a ForceEndTurn sent with none open in our view
                # (its StartOfTurn was on its way): Flux read that ForceEndTurn after this turn's
                # audio, so this end is its answer (by it, or by Flux first), not one more
                self._settle(self._unconfirmed[0])
            elif info.get("trigger") == "manual" and self._answered_locally:
                # the answer to a ForceEndTurn answered here already: not another end
                self._answered_locally -= 1
                if text:
                    self._queue.put_nowait(Transcript(text, True, False, confidence))
                return
            self._queue.put_nowait(Transcript(text, True, True, confidence))
            return
        if event == "StartOfTurn":
            # the replay's turn is ended in our view already, by the ForceEndTurn resent after
            # it: a second one before its EndOfTurn gets none (as in finalize())
            self._turn_open = not replays_turn
        if event in EVENTS or text:
            self._queue.put_nowait(Transcript(text, False, False, 0.0, EVENTS.get(event, "")))

    def _replay_turn(self, event: str, window_start: float, window_end: float) -> bool:
        """Once Flux shows whether the replay holds a turn, answer the ForceEndTurns waiting for
        that; True if this event is that turn's and one of them ends it already."""
        replay_end = self._replay_end_s
        assert replay_end is not None
        if (event == "StartOfTurn" and window_start < replay_end) or event == "EndOfTurn":
            owed, self._replay_owed = self._replay_owed, 0
            self._stop_replay_wait()
            if not owed:
                return False
            self._force_owed += 1  # that turn's EndOfTurn answers the first
            self._answer_here(owed - 1)  # one turn: one EndOfTurn
            return True
        if window_end >= replay_end:  # Flux went past the replay and opened no turn in it
            self._replay_decided_empty()
        return False

    def _replay_decided_empty(self) -> None:
        """No turn in the replay (or no word from Flux in time): the waiting ForceEndTurns found
        none, so Flux owes them nothing."""
        owed, self._replay_owed = self._replay_owed, 0
        self._stop_replay_wait()
        self._answer_here(owed)

    def _answer_here(self, n: int, sent: bool = True) -> None:
        """End-of-utterance answers for ``n`` ForceEndTurns Flux owes nothing for; a manual
        EndOfTurn that still comes for one (``sent``) is its late answer and ends nothing."""
        if sent:
            self._answered_locally += n
        for _ in range(n):
            self._queue.put_nowait(Transcript("", True, True, 0.0))

    def _stop_replay_wait(self) -> None:
        self._replay_end_s = None
        if self._replay_wait is not None:
            self._replay_wait.cancel()
            self._replay_wait = None

    async def _resume(self, conn: LiveSocket, replay: bytes) -> None:
        """(Under the audio lock, so no finalize() in between.)"""
        self._turn_open = False
        self._answered_locally = 0  # no late EndOfTurn of the lost socket comes on this one
        self._socket_epoch += 1
        self._unheard = 0
        # every ForceEndTurn still unanswered: owed on the lost socket, never sent, sent with
        # no turn open and never shown read (no Pong), or sent after an earlier reconnect and
        # still waiting for Flux's word on that replay
        owed = self._force_owed + self._force_unsent + self._replay_owed + len(self._unconfirmed)
        self._unconfirmed.clear()
        self._owed_before.clear()
        # unsent until the ForceEndTurn goes out: a socket that dies under the replay leaves
        # them all to the next one
        self._force_owed, self._force_unsent, self._replay_owed = 0, owed, 0
        self._stop_replay_wait()
        # The replay up to where the latest of them was sent (or meant to be): audio after it
        # is the caller's next turn, not the one they end
        bps, width = self._replay.bytes_per_second, self._replay.sample_bytes
        split = len(replay)
        if owed:
            at = round((self._owed_at - self._replay.connection_offset_s) * bps) // width * width
            split = max(0, min(split, at))
        if replay[:split]:
            await conn.send_media(replay[:split])
        if replay and owed:
            # The replay (everything since the last EndOfTurn) holds any turn those ended or
            # were meant to end, so ONE ForceEndTurn there ends that: it owes at most one
            # EndOfTurn, and the client answers the others at once.
            await conn.send_force_end_turn()
            self._replay_owed = 1
            owed -= 1
        self._force_unsent = 0
        if replay[split:]:
            await conn.send_media(replay[split:])
        if replay:  # until Flux shows whether it holds a turn (one begun before the split)
            self._replay_end_s, self._replay_full_s = split / bps, len(replay) / bps
        self._answer_here(owed, sent=False)  # covered by the one sent, or no replay to end

    def _resumed(self, replay: bytes) -> None:
        self._replay_wait_from = asyncio.get_running_loop().time()
        self._arm_replay_wait()

    def _arm_replay_wait(self) -> None:
        """Bounded: Flux may never say there was no turn. From when the replay went out."""
        if self._replay_end_s is None:
            return
        if self._replay_wait is not None:
            self._replay_wait.cancel()
        loop = asyncio.get_running_loop()
        due = self._replay_wait_from + self._replay_end_s + self._stt.replay_turn_wait_s
        self._replay_wait = loop.call_at(due, self._replay_decided_empty)

    async def _keep_alive(self) -> None:
        """No KeepAlive in v2: silence while the engine sends nothing (kept for replay too, so
        Flux's audio clock and the replay buffer stay aligned)."""
        await self._send_audio(SILENCE_FRAME)


def _number(value: Any) -> float:
    """A finite float from a TurnInfo field, else 0.0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def create(settings: Settings, secrets: Secrets) -> FluxSTT:
    s = settings.stt
    return FluxSTT(
        api_key=secrets.require("deepgram_api_key"),
        url=s.deepgram_url,
        model=s.flux_model,
        eot_threshold=s.flux_eot_threshold,
        eager_eot_threshold=s.flux_eager_eot_threshold,
        eot_timeout_ms=s.flux_eot_timeout_ms,
        connect_timeout_s=s.connect_timeout_s,
        keepalive_s=s.deepgram_keepalive_s,
        max_reconnects=s.max_reconnects,
    )
