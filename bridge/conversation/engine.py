"""The turn-taking engine (DESIGN.md, Turn contract), sans-I/O.

LISTENING -> USER_SPEAKING -> THINKING -> AGENT_SPEAKING -> LISTENING. Every input is a
method call carrying the current clock time (caller frame with its VAD decision, transcript,
LLM delta, TTS audio, playback position, DTMF, tick); every output is an Action queued for
the driver (bridge.conversation.actions). Nothing here awaits, sleeps or touches a socket,
so tests drive it with a fake clock and read the actions back.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from dataclasses import dataclass, field

from bridge.conversation import tools as builtin
from bridge.conversation.actions import (
    Action,
    BargeIn,
    CancelReply,
    ClearPlayback,
    EndTts,
    EndUtterance,
    Hangup,
    PausePlayback,
    Play,
    Preempted,
    ProviderFailed,
    ProviderKind,
    Record,
    ResumePlayback,
    RunTool,
    StartLlm,
    StartTts,
    SttAudio,
    SttFinalize,
    Transfer,
    TtsText,
    TurnDone,
    UseProvider,
)
from bridge.conversation.clauses import ClauseSplitter
from bridge.conversation.echo import EchoGuard, frame_rms
from bridge.conversation.eot import end_of_turn_ms
from bridge.conversation.history import recent_turns
from bridge.conversation.level_gate import LevelGate
from bridge.conversation.marks import TurnMarks
from bridge.conversation.reply import After, Reply, ReplyKind, truncate_history
from bridge.conversation.stt_ends import LATE_RECORD, OwedEnds
from bridge.leg import FRAME_MS
from bridge.providers.base import EAGER_END_OF_TURN, TURN_RESUMED, Message, ToolCall, Transcript
from bridge.settings import Settings

log = logging.getLogger(__name__)

TRANSFER_LINE = "Please hold while I transfer you."
TRANSFER_FAILED_LINE = "Sorry, I couldn't transfer you right now."
CANCELLED_TOOL_RESULT = "cancelled: the caller interrupted before this finished"
# how far the echo guard runs the played position past the leg's last PlaybackProgress (the
# RTP leg reports every 100 ms)
PLAYED_AHEAD_MS = 200.0
# Deepgram answers Finalize only when it has "a significant amount of audio" to process (its
# Finalize page; the amount is not given, the fake draws the line at 250 ms). An early Finalize
# this soon after the last one (a second short pause in one sentence) may go unanswered, and
# the turn would then wait stt_final_timeout_s for it: such a pause is not finalized early.
EARLY_FINALIZE_MIN_AUDIO_MS = 250


class State(enum.Enum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    AGENT_SPEAKING = "agent_speaking"
    ENDED = "ended"


@dataclass(slots=True)
class _Turn:
    """The caller's turn being heard."""

    started: float
    prefix: str = ""  # text carried over (speech before a cancelled reply, DTMF)
    finals: list[str] = field(default_factory=list)
    interim: str = ""
    speech_end: float = 0.0  # end of the last speech frame
    silence_ms: int = 0
    awaiting_final: bool = False
    final_deadline: float = 0.0
    eou_after_speech: bool = False  # the STT called the utterance complete since the last speech
    pending_finals: int = 0  # finalize requests not answered yet
    early_finalized: bool = False  # finalize sent in this silence, before the endpoint (preemption)
    speech_end_frame: int = 0  # the engine's frame number of the last speech frame
    finalize_frame: int | None = None  # the engine's frame number when a finalize last went out

    def text(self) -> str:
        # An interim is the segment after the last final (or the final never came or came
        # empty): the interim is better than nothing.
        said = " ".join(f for f in (*self.finals, self.interim) if f.strip())
        return " ".join(p for p in (self.prefix.strip(), said.strip()) if p)


@dataclass(slots=True)
class _Candidate:
    """Caller speech while the agent talks, not yet confirmed as a barge-in."""

    started: float
    speech_ms: int = 0  # the current run of speech (gaps up to max_gap_ms do not break it)
    total_ms: int = 0
    gap_ms: int = 0
    text: str = ""
    merge: bool = False  # began within merge_window_ms of the caller's last turn


_FILLERS = frozenset({"um", "uh", "er", "erm", "ah", "hmm", "mm"})


def same_words(a: str, b: str) -> bool:
    """Two transcripts say the same thing (case, punctuation and fillers aside)."""
    def words(text: str) -> list[str]:
        out = ["".join(c for c in w.lower() if c.isalnum() or c == "'") for w in text.split()]
        return [w for w in out if w and w not in _FILLERS]
    return words(a) == words(b)


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        system_prompt: str,
        provider_counts: dict[ProviderKind, int],
        fallback_audio: bytes,
    ) -> None:
        self.settings = settings
        self.conv = settings.conversation
        self.state = State.LISTENING
        self.history: list[Message] = [Message("system", system_prompt)] if system_prompt.strip() else []
        self.tools = builtin.tool_specs(self.conv)
        self.end_reason: str | None = None
        self._counts = provider_counts
        self._index: dict[ProviderKind, int] = {"stt": 0, "llm": 0, "tts": 0}
        self._fallback_audio = fallback_audio
        self._actions: list[Action] = []
        self._seq = 0
        self._started = 0.0
        self._turn: _Turn | None = None
        self._candidate: _Candidate | None = None
        self._reply: Reply | None = None
        self._fallback_utts: dict[str, str] = {}  # fallback utterance -> what follows it
        # ends the STT owes to a backchannel or to a turn that stopped waiting (stt_ends.py)
        self._owed_ends = OwedEnds()
        self._preroll: deque[bytes] = deque(maxlen=max(1, self.conv.preroll_ms // FRAME_MS))
        self._silence_since = 0.0
        self._reprompted = False
        self._dtmf = ""
        self._dtmf_deadline = 0.0
        self._transfer_pending = False
        self._echo = EchoGuard(self.conv.barge_in.echo_return_loss_db, self.conv.barge_in.echo_tail_ms)
        self._echo_on = self.conv.barge_in.echo_guard
        self._backchannel = {w.lower() for w in self.conv.barge_in.backchannel_words}
        self._paused = False  # the leg's playout is paused (caller speech not yet confirmed)
        self._gate = LevelGate(self.conv.level_gate_db, self.conv.level_gate_learn_ms,
                               self.conv.level_gate_floor_dbfs, self.conv.level_gate_hold_db)
        # Caller frames seen, and the frame that ended the speech of their last completed turn:
        # the merge window counts audio, not loop time (a stalled loop delivers frames late).
        self._frame_no = 0
        self._last_speech_frame = -(10**9)
        self.heard_speech = False  # the verdict on the last caller frame (echo guard, level gate)

    # -- plumbing ----------------------------------------------------------------------------
    def take_actions(self) -> list[Action]:
        out, self._actions = self._actions, []
        return out

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq}"

    @property
    def ended(self) -> bool:
        return self.state is State.ENDED

    @property
    def reply(self) -> Reply | None:
        return self._reply

    # -- start and end -----------------------------------------------------------------------
    def start(self, now: float) -> None:
        """The call is up: greet (the configured line, or the LLM's own opening if empty)."""
        self._started = now
        self._silence_since = now
        self._emit(Record("call_start"))
        interruptible = self.conv.greeting_interruptible
        if self.conv.greeting.strip():
            self._say(now, self.conv.greeting, "greeting", interruptible=interruptible)
        else:
            self._start_llm_reply(now, None, purpose="greeting", interruptible=interruptible)

    def on_leg_ended(self, now: float, reason: str) -> None:
        if self.ended:
            return
        if self._reply is not None:
            self._cancel_reply(now, interrupted=True)
        self._end(reason if reason else "caller-hangup")

    def _end(self, reason: str) -> None:
        self.state = State.ENDED
        self.end_reason = reason
        self._emit(Record("call_end", {"reason": reason}))

    def _hangup(self, reason: str) -> None:
        self._emit(Hangup(reason))
        self._end(reason)

    # -- caller audio -----------------------------------------------------------------------
    def on_frame(self, now: float, pcm: bytes, is_speech: bool) -> None:
        if self.state is State.ENDED:  # not the property: 50 frames a second a call
            return
        self._frame_no += 1
        reply = self._reply
        agent_busy = reply is not None
        if self._echo_on and reply is not None and reply.playing:
            self._echo.played(now, reply.id, reply.levels, self._played_estimate(now, reply))
        if is_speech:
            # the frame's level, once: the echo guard and the level gate judge it
            rms = frame_rms(pcm)
            if self._echo_on and self._echo.is_echo(now, rms):
                is_speech = False
            # Far below the caller's own voice: background talk, not speech (level_gate.py).
            in_turn = self._turn is not None or self._candidate is not None
            is_speech = self._gate.frame(rms, is_speech, in_turn)
        else:
            # not speech, and the gate would say so: the frame only fills its window, and
            # its level is worked out only if speech follows within it (most frames do not)
            self._gate.quiet(pcm)
        self.heard_speech = is_speech
        if self._turn is not None:
            self._turn_frame(now, pcm, is_speech)
        elif agent_busy:
            self._candidate_frame(now, pcm, is_speech)
        elif is_speech and self._fallback_playing() is None:
            self._begin_turn(now, pcm, prefix="")
        else:
            self._preroll.append(pcm)

    def _begin_turn(self, now: float, pcm: bytes, prefix: str) -> None:
        self._turn = _Turn(started=now, prefix=prefix, speech_end=now + FRAME_MS / 1000,
                           speech_end_frame=self._frame_no)
        self.state = State.USER_SPEAKING
        self._silence_since = now
        self._reprompted = False
        self._flush_preroll()
        self._emit(SttAudio(pcm))

    def _flush_preroll(self) -> None:
        """The audio from just before speech was detected goes to the STT first."""
        for old in self._preroll:
            self._emit(SttAudio(old))
        self._preroll.clear()

    def _turn_frame(self, now: float, pcm: bytes, is_speech: bool) -> None:
        turn = self._turn
        assert turn is not None
        if turn.awaiting_final:
            if not is_speech:
                turn.silence_ms += FRAME_MS
                self._preroll.append(pcm)
                self._maybe_preempt(now)
                return
            # The caller went on talking while the STT finalised: the turn continues.
            turn.awaiting_final = False
            self.state = State.USER_SPEAKING
            self._flush_preroll()
        self._emit(SttAudio(pcm))
        if is_speech:
            if self._reply is not None and self._reply.held and not self._stt_turns():
                self._drop_preempt(now, "resumed")  # the caller goes on: that reply is stale
            turn.speech_end = now + FRAME_MS / 1000
            turn.speech_end_frame = self._frame_no
            turn.silence_ms = 0
            turn.eou_after_speech = False
            turn.early_finalized = False
            self._gate.speech()
            self._silence_since = now
            return
        turn.silence_ms += FRAME_MS
        self._early_finalize(turn)
        self._maybe_preempt(now)
        if turn.silence_ms >= self._endpoint_ms(turn):
            self._endpoint(now)

    def _stt_turns(self) -> bool:
        """The STT in use detects the end of the turn itself (Deepgram Flux)."""
        return self._stt_name() == "deepgram-flux"

    def _stt_name(self) -> str:
        stt = self.settings.stt.providers
        return stt[min(self._index["stt"], len(stt) - 1)]

    def _endpoint_ms(self, turn: _Turn) -> int:
        """The silence that ends the turn. With Flux, its EndOfTurn does (Deepgram: its turn
        detection replaces the client's VAD endpoint); the window is then only a safety net past
        Flux's own eot_timeout_ms, for a session that never answers."""
        if self._stt_turns():
            return self.settings.stt.flux_eot_timeout_ms + 1000
        return end_of_turn_ms(turn.text(), self.conv)

    def _endpoint(self, now: float) -> None:
        turn = self._turn
        assert turn is not None
        self.state = State.THINKING
        if turn.eou_after_speech and not turn.pending_finals:
            self._complete_turn(now)
            return
        turn.awaiting_final = True
        turn.final_deadline = now + self.conv.stt_final_timeout_s
        self._preroll.clear()
        if not turn.early_finalized:  # else that request's answer is the final we wait for
            turn.pending_finals += 1
            turn.finalize_frame = self._frame_no
            self._emit(SttFinalize())

    def _early_finalize(self, turn: _Turn) -> None:
        """With preemptive generation, the STT is asked for its final as soon as the caller
        falls silent, not after the endpoint window: the final (and so the confirmation, or
        a better transcript to start again on) comes one window sooner. Speech after it
        simply goes on as the next segment of the same turn."""
        conv = self.conv
        if conv.preemptive_generation and not turn.early_finalized \
                and turn.silence_ms >= conv.preemptive_after_ms and self._early_finalize_on():
            last = turn.finalize_frame
            if last is not None and (self._frame_no - last) * FRAME_MS < EARLY_FINALIZE_MIN_AUDIO_MS:
                return  # the endpoint finalizes this one, if it is the end
            turn.early_finalized = True
            turn.pending_finals += 1
            turn.finalize_frame = self._frame_no
            self._emit(SttFinalize())

    def _complete_turn(self, now: float) -> None:
        turn = self._turn
        assert turn is not None
        self._turn = None
        text = turn.text()
        if turn.pending_finals:  # answered without waiting for them (stt_final_timeout_s)
            self._owed_ends.late(now, turn.pending_finals, text)
        self._silence_since = now
        if text:
            self._gate.turn_confirmed()
        else:
            self._gate.turn_dropped()
        held = self._reply if self._reply is not None and self._reply.held else None
        if held is not None:
            if text and same_words(held.preempt_text, text):
                self._last_speech_frame = turn.speech_end_frame
                self._confirm_preempt(now, held, text)
                return
            self._drop_preempt(now, "changed")
        if not text:
            self.state = State.LISTENING  # noise, a click: nothing was said
            return
        self._last_speech_frame = turn.speech_end_frame
        marks = TurnMarks(user_speech_end=turn.speech_end, turn_end=now, stt_final=now)
        base = len(self.history)
        self.history.append(Message("user", text))
        self._emit(Record("user", {"text": text}))
        self._start_llm_reply(now, marks, purpose="answer", interruptible=True)
        if self._reply is not None:
            self._reply.turn_base = base

    # -- preemptive generation -----------------------------------------------------------------
    def _early_finalize_on(self) -> bool:
        mode = self.conv.early_finalize
        if mode != "auto":
            return mode == "on"
        return self._stt_name() == "deepgram"

    def _maybe_preempt(self, now: float) -> None:
        """The caller fell silent: start the reply on the best transcript so far, held until
        the turn is confirmed (LiveKit's preemptive generation)."""
        conv = self.conv
        turn = self._turn
        if not conv.preemptive_generation or turn is None or turn.silence_ms < conv.preemptive_after_ms \
                or self._stt_turns():  # Flux says when: EagerEndOfTurn (_flux_event)
            return
        text = turn.text()
        if not text or (turn.interim.strip() and not conv.preemptive_on_interim):
            return
        self._preempt(now, turn, text)

    def _preempt(self, now: float, turn: _Turn, text: str) -> None:
        reply = self._reply
        if reply is not None:
            if not reply.held or same_words(reply.preempt_text, text):
                return
            self._drop_preempt(now, "changed")  # a newer transcript: start again on it
        if self._reply is not None or self._fallback_playing() is not None:
            return
        state = self.state
        base = len(self.history)
        self.history.append(Message("user", text))  # the LLM's view; cut again if dropped
        reply = self._new_reply(now, "llm", "answer", True, marks=TurnMarks(user_speech_end=turn.speech_end))
        self.state = state
        reply.held = True
        reply.preempt_text = text
        reply.turn_base = base
        self._start_round(now, reply)

    def _drop_preempt(self, now: float, outcome: str) -> None:
        reply = self._reply
        assert reply is not None and reply.held
        self._reply = None
        reply.cancelled = True
        self._emit(CancelReply(reply.id))
        self.history = self.history[: reply.turn_base]  # its user turn and anything it added
        self._emit(Preempted(outcome))

    def _confirm_preempt(self, now: float, reply: Reply, text: str) -> None:
        """The final transcript says what the held reply answered: release it."""
        reply.held = False
        reply.started = now
        marks = reply.marks
        if marks is not None:
            marks.turn_end = marks.stt_final = now
            marks.preempted = True
        self.history[reply.turn_base] = Message("user", text)
        self._emit(Record("user", {"text": text}))
        self._emit(Preempted("confirmed"))
        self.state = State.THINKING
        for pcm in reply.held_audio:
            self._emit(Play(reply.id, pcm))
        reply.held_audio.clear()
        if reply.held_done:
            reply.held_done = False
            self._after_round(now, reply)
        if reply is self._reply and reply.held_end:
            self._emit(EndUtterance(reply.id))
            if reply.audio_ms == 0:
                self._reply_finished(now, reply)

    # -- barge-in ------------------------------------------------------------------------------
    def _candidate_frame(self, now: float, pcm: bytes, is_speech: bool) -> None:
        reply = self._reply
        assert reply is not None
        if not (reply.interruptible and self.conv.barge_in.enabled):
            self._preroll.append(pcm)
            return
        cand = self._candidate
        if cand is None:
            if not is_speech:
                self._preroll.append(pcm)
                return
            since_ms = (self._frame_no - self._last_speech_frame) * FRAME_MS
            merge = reply.purpose == "answer" and reply.turn_base >= 0 \
                and since_ms <= self.conv.barge_in.merge_window_ms
            cand = self._candidate = _Candidate(started=now, merge=merge)
            self._flush_preroll()
        self._emit(SttAudio(pcm))
        bi = self.conv.barge_in
        if is_speech:
            cand.speech_ms += FRAME_MS
            cand.total_ms += FRAME_MS
            cand.gap_ms = 0
            if bi.pause_on_onset and not self._paused and cand.speech_ms >= bi.pause_after_ms:
                self._paused = True  # stop the agent now; confirm (or not) over min_speech_ms
                self._emit(PausePlayback())
            self._maybe_barge_in(now)
            return
        cand.gap_ms += FRAME_MS
        max_gap = bi.max_gap_ms
        if cand.gap_ms >= max_gap:
            cand.speech_ms = 0  # the run is over; a new one must reach min_speech_ms itself
            if self._paused:
                self._resume(cand)  # a false alarm: play on from where it paused
        if cand.gap_ms >= max(self.conv.endpointing_ms, 2 * max_gap):
            # A cough, an "mm-hm", a door: not a turn. Its transcript is dropped. (Until now the
            # audio stays with the STT, so "Wait, ... what about Sunday" keeps its first word.)
            self._candidate = None
            self._owed_ends.discard()
            self._emit(SttFinalize())
            self._emit(Record("backchannel", {"speech_ms": cand.total_ms, "text": cand.text}))

    def _resume(self, cand: _Candidate) -> None:
        self._paused = False
        self._emit(ResumePlayback())
        self._emit(Record("false_interruption", {"speech_ms": cand.total_ms, "text": cand.text}))

    def _clear_playback(self) -> None:
        self._paused = False  # a cleared leg plays the next utterance at once
        self._emit(ClearPlayback())

    def _maybe_barge_in(self, now: float) -> None:
        cand = self._candidate
        bi = self.conv.barge_in
        if cand is None or cand.speech_ms < bi.min_speech_ms:
            return
        words = [w.strip(".,!?").lower() for w in cand.text.split()]
        content = [w for w in words if w and w not in self._backchannel]
        if bi.min_words > 0 and len(content) < bi.min_words:
            return
        if words and not content:
            return  # only backchannel words so far
        self._barge_in(now, cand)

    def _barge_in(self, now: float, cand: _Candidate | None) -> None:
        reply = self._reply
        assert reply is not None
        self._candidate = None
        prefix = ""
        was_playing = reply.playing
        base = reply.turn_base
        heard = self._cancel_reply(now, interrupted=True)
        if cand is not None and cand.merge and 0 <= base < len(self.history) \
                and self.history[base].role == "user":
            # A pause inside one request: the caller's two parts are one turn, and the reply
            # to the first part (and the little of it they heard) leaves the LLM's context.
            prefix = self.history[base].content
            self.history = self.history[:base]
            self._emit(Record("turn_merged", {"heard_ms": heard, "first_part": prefix}))
        elif was_playing:
            self._emit(BargeIn(heard))
        elif reply.purpose == "answer" and self.history and self.history[-1].role == "user":
            # Nothing was heard yet: the caller is still talking. Their last words and the new
            # ones make one turn, and the unheard reply goes.
            prefix = self.history.pop().content
        self._turn = _Turn(started=cand.started if cand else now, prefix=prefix, speech_end=now,
                           speech_end_frame=self._frame_no)
        self.state = State.USER_SPEAKING
        self._silence_since = now
        self._reprompted = False

    def _cancel_reply(self, now: float, interrupted: bool) -> int:
        """Stop the current reply; the history keeps only what the caller heard. Returns ms heard."""
        reply = self._reply
        assert reply is not None
        self._reply = None
        reply.cancelled = True
        heard_ms = reply.heard_ms if reply.playing else 0
        self._clear_playback()
        self._emit(CancelReply(reply.id))
        self._cancel_fallbacks()
        heard = reply.spoken.heard(heard_ms, reply.audio_ms, reply.tts_done)
        self._answer_cancelled_tools(reply)
        # Text not yet in the history: a say-line, or the LLM round still streaming.
        unfinished = reply.round_text if (reply.kind == "say" or reply.llm_active) else ""
        self.history = truncate_history(self.history, reply, heard, unfinished)
        self._emit(Record("agent", {"text": heard, "interrupted": interrupted, "heard_ms": heard_ms,
                                     "purpose": reply.purpose, "full_text": reply.spoken.text}))
        return heard_ms

    # -- transcripts ---------------------------------------------------------------------------
    def on_transcript(self, now: float, tr: Transcript) -> None:
        if self.ended:
            return
        if self._owed_ends:
            claimed, late = self._owed_ends.claim(now, tr, self._turn is not None)
            if late is not None:
                self._emit(Record(LATE_RECORD, late))
            if claimed:
                return
        if self._candidate is not None:
            cand = self._candidate
            cand.text = (cand.text + " " + tr.text).strip() if tr.is_final else tr.text
            self._maybe_barge_in(now)
            return
        turn = self._turn
        if turn is None:
            if tr.text.strip():
                log.debug("transcript outside a turn ignored: %r", tr.text)
            return
        if not tr.is_final:
            turn.interim = tr.text
            if tr.event:
                self._flux_event(now, turn, tr.event)
            self._maybe_preempt(now)
            return
        if self._stt_turns() and tr.end_of_utterance:
            # Flux's EndOfTurn (its own, or the answer to our ForceEndTurn): the turn is over,
            # whatever the VAD says. Its transcript is the whole turn's (cumulative).
            turn.finals.append(tr.text)
            turn.interim = ""
            turn.pending_finals = max(0, turn.pending_finals - 1)
            self._complete_turn(now)
            return
        words_pending = bool(turn.interim.strip()) and not tr.text.strip()
        turn.finals.append(tr.text)
        turn.interim = ""
        if tr.end_of_utterance:
            if turn.pending_finals:
                turn.pending_finals -= 1  # the answer to one of our finalize requests
                if turn.awaiting_final and not turn.pending_finals:
                    self._complete_turn(now)
                    return
                if turn.early_finalized and not turn.pending_finals:
                    turn.eou_after_speech = True  # it covers all the speech: the endpoint needs no other
            elif tr.text.strip() or (any(f.strip() for f in turn.finals) and not words_pending):
                # the STT's own end of utterance (speech_final). An EMPTY one (noise, or the gap
                # before the words' final) counts only when finalized words are pending and no
                # interim words still await their final: else "yes" would end up outside the turn
                turn.eou_after_speech = True
        self._maybe_preempt(now)

    def _flux_event(self, now: float, turn: _Turn, event: str) -> None:
        """EagerEndOfTurn starts the held reply on its transcript; TurnResumed drops it."""
        held = self._reply if self._reply is not None and self._reply.held else None
        if event == TURN_RESUMED and held is not None:
            self._drop_preempt(now, "resumed")
        elif event == EAGER_END_OF_TURN and self.conv.preemptive_generation and turn.text():
            self._preempt(now, turn, turn.text())

    def on_stt_failed(self, now: float, reason: str, label: str = "error") -> None:
        if self.ended:
            return
        self._emit(ProviderFailed("stt", self._index["stt"], reason, label))
        if self._reply is not None and self._reply.held:
            self._drop_preempt(now, "dropped")
        self._turn = None
        self._candidate = None
        self._owed_ends.clear()  # the new STT owes nothing
        if self._reply is None:
            self.state = State.LISTENING
        if not self._failover("stt"):
            self._fallback_then(now, "hangup")
            return
        if self._reply is None:
            self._fallback_then(now, "listen")

    # -- replies -------------------------------------------------------------------------------
    def _new_reply(self, now: float, kind: ReplyKind, purpose: str, interruptible: bool,
                   marks: TurnMarks | None = None, then: After = "listen", reason: str = "") -> Reply:
        reply = Reply(self._next_id("r"), kind, purpose, interruptible, now, then=then, end_reason=reason,
                      marks=marks, splitter=ClauseSplitter(first_clause_words=self.conv.first_clause_words))
        self._reply = reply
        self.state = State.THINKING
        self._emit(StartTts(reply.id))
        return reply

    def _say(self, now: float, text: str, purpose: str, *, interruptible: bool = True,
             then: After = "listen", reason: str = "") -> None:
        reply = self._new_reply(now, "say", purpose, interruptible, then=then, reason=reason)
        for clause in reply.splitter.push(text + " ") + reply.splitter.flush():
            self._send_clause(now, reply, clause)
        reply.round_text = text
        self._end_tts(now, reply)

    def _start_llm_reply(
        self, now: float, marks: TurnMarks | None, purpose: str, interruptible: bool
    ) -> None:
        reply = self._new_reply(now, "llm", purpose, interruptible, marks=marks)
        self._start_round(now, reply)

    def _start_round(self, now: float, reply: Reply) -> None:
        reply.round += 1
        reply.stream_id = f"{reply.id}.{reply.round}.{self._index['llm']}"
        reply.llm_active = True
        reply.llm_deadline = now + self.settings.llm.first_token_timeout_s
        reply.got_token = False
        reply.round_text = ""
        reply.round_tools = []
        if reply.marks is not None and reply.marks.llm_start is None:
            reply.marks.llm_start = now
        messages = recent_turns(self.history, self.conv.history_max_turns)
        self._emit(StartLlm(reply.id, reply.stream_id, messages, self.tools))

    def _live(self, stream_id: str) -> Reply | None:
        reply = self._reply
        if reply is None or reply.stream_id != stream_id or not reply.llm_active:
            return None
        return reply

    def on_llm_text(self, now: float, stream_id: str, text: str) -> None:
        reply = self._live(stream_id)
        if reply is None:
            return
        reply.llm_deadline = now + self.settings.llm.stall_timeout_s
        if not reply.got_token:
            reply.got_token = True
            if reply.marks is not None and reply.marks.llm_first_token is None:
                reply.marks.llm_first_token = now
        reply.round_text += text
        for clause in reply.splitter.push(text):
            self._send_clause(now, reply, clause)

    def on_llm_tool(self, now: float, stream_id: str, call: ToolCall) -> None:
        reply = self._live(stream_id)
        if reply is None:
            return
        reply.llm_deadline = now + self.settings.llm.stall_timeout_s
        reply.got_token = True
        reply.round_tools.append(call)

    def on_llm_done(self, now: float, stream_id: str) -> None:
        reply = self._live(stream_id)
        if reply is None:
            return
        reply.llm_active = False
        reply.llm_deadline = None
        for clause in reply.splitter.flush():
            self._send_clause(now, reply, clause)
        text = reply.round_text.strip()
        if text or reply.round_tools:
            reply.history_indices.append(len(self.history))
            self.history.append(Message("assistant", text, tool_calls=tuple(reply.round_tools)))
        if reply.held and (reply.round_tools or not reply.clauses_sent):
            reply.held_done = True  # tools (side effects) and an empty reply wait for the turn
            return
        self._after_round(now, reply)

    def _after_round(self, now: float, reply: Reply) -> None:
        if reply.round_tools:
            self._handle_tools(now, reply)
        if not reply.pending_tools:
            self._finish_text(now, reply)

    def _finish_text(self, now: float, reply: Reply) -> None:
        if reply.then == "hangup" and reply.clauses_sent == 0:
            self._send_clause(now, reply, self.conv.goodbye_text)
        if reply.then == "transfer" and reply.clauses_sent == 0:
            self._send_clause(now, reply, TRANSFER_LINE)
        if reply.clauses_sent == 0 and reply.then == "listen":
            # The model said nothing at all: no audio will come.
            self._cancel_silent_reply(now, reply)
            return
        self._end_tts(now, reply)

    def _cancel_silent_reply(self, now: float, reply: Reply) -> None:
        self._reply = None
        self._emit(CancelReply(reply.id))
        self._enter_listening(now)

    def _handle_tools(self, now: float, reply: Reply) -> None:
        for call in reply.round_tools:
            self._emit(Record("tool_call", {"name": call.name, "arguments": call.arguments}))
            if call.name == builtin.END_CALL:
                reply.then = "hangup"
                reply.end_reason = "agent-ended"
                self._tool_result(call, "The call will end after your goodbye.")
            elif call.name == builtin.TRANSFER_CALL and self.conv.transfer_target:
                reply.then = "transfer"
                self._tool_result(call, "The caller is being transferred.")
            elif call.name == builtin.SEND_DTMF or any(t.name == call.name for t in self.conv.http_tools):
                reply.pending_tools[call.id] = call
                self._emit(RunTool(reply.id, call))
            else:
                self._tool_result(call, f"error: no tool named {call.name!r}")

    def _answer_cancelled_tools(self, reply: Reply) -> None:
        """Tools still running when their reply is cancelled get a result anyway: OpenAI
        rejects (HTTP 400) any history where a tool_call id has no tool message after it."""
        for call in reply.pending_tools.values():
            self._tool_result(call, CANCELLED_TOOL_RESULT)
        reply.pending_tools.clear()

    def _tool_result(self, call: ToolCall, result: str) -> None:
        self.history.append(Message("tool", result, tool_call_id=call.id))

    def on_tool_result(self, now: float, reply_id: str, call_id: str, result: str) -> None:
        reply = self._reply
        if reply is None or reply.id != reply_id or call_id not in reply.pending_tools:
            return
        call = reply.pending_tools.pop(call_id)
        self._tool_result(call, result)
        self._emit(Record("tool_result", {"name": call.name, "result": result[:500]}))
        if reply.pending_tools:
            return
        if reply.round >= self.conv.max_tool_rounds:
            self._finish_text(now, reply)
        else:
            self._start_round(now, reply)  # the model continues with the results

    def on_llm_failed(self, now: float, stream_id: str, reason: str, label: str = "error") -> None:
        reply = self._live(stream_id)
        if reply is None:
            return
        self._provider_failed(now, "llm", reason, label)

    def _provider_failed(self, now: float, kind: ProviderKind, reason: str, label: str) -> None:
        """An LLM or TTS failed mid-reply: the fallback line plays at once, and the reply starts
        over on the next provider; with none left the call is handed over or ended."""
        reply = self._reply
        assert reply is not None
        self._emit(ProviderFailed(kind, self._index[kind], reason, label))
        if reply.held:  # nothing was heard: drop it; the confirmed turn starts a reply anew
            self._failover(kind)
            self._drop_preempt(now, "dropped")
            return
        was_played = reply.fallback_played
        self._reply = None
        reply.cancelled = True
        self._clear_playback()
        self._emit(CancelReply(reply.id))
        self._answer_cancelled_tools(reply)
        # The unfinished round never reached the caller in full: the history drops it.
        self.history = truncate_history(self.history, reply, "", "")
        if not self._failover(kind):
            self._fallback_then(now, "transfer" if self.conv.transfer_target else "hangup")
            return
        if not was_played:
            self._fallback_then(now, "continue")
        if reply.kind == "say":
            self._say(now, reply.spoken.text, reply.purpose, interruptible=reply.interruptible,
                      then=reply.then, reason=reply.end_reason)
        else:
            self._start_llm_reply(now, reply.marks, reply.purpose, reply.interruptible)
        if self._reply is not None:
            self._reply.fallback_played = True

    def _failover(self, kind: ProviderKind) -> bool:
        if self._index[kind] + 1 >= self._counts.get(kind, 1):
            return False
        self._index[kind] += 1
        self._emit(UseProvider(kind, self._index[kind]))
        return True

    # -- TTS and playback ------------------------------------------------------------------------
    def _send_clause(self, now: float, reply: Reply, clause: str) -> None:
        if not clause.strip():
            return
        reply.spoken.add(clause)
        reply.clauses_sent += 1
        if reply.first_text_at is None:
            reply.first_text_at = now
            reply.tts_deadline = now + self.settings.tts.first_byte_timeout_s
            if reply.marks is not None:
                reply.marks.first_clause = now
        self._emit(TtsText(reply.id, clause))

    def _end_tts(self, now: float, reply: Reply) -> None:
        reply.tts_ended = True
        self._emit(EndTts(reply.id))
        if reply.audio_ms and reply.tts_deadline is None:
            reply.tts_deadline = now + self.settings.tts.stall_timeout_s  # the rest, or its end

    def on_tts_text_taken(self, now: float, reply_id: str, index: int) -> None:
        reply = self._reply
        if reply is not None and reply.id == reply_id:
            reply.spoken.mark_start(index, reply.audio_ms)
            if reply.audio_ms and reply.tts_deadline is None:
                # text taken after its last audio: the TTS owes audio for it
                reply.tts_deadline = now + self.settings.tts.stall_timeout_s

    def on_tts_audio(self, now: float, reply_id: str, pcm: bytes) -> None:
        reply = self._reply
        if reply is None or reply.id != reply_id or not pcm:
            return
        if reply.audio_ms == 0 and reply.marks is not None and reply.marks.tts_first_byte is None:
            reply.marks.tts_first_byte = now
        reply.add_audio(pcm)
        # once the text has ended, more audio (or the end) is owed; before, more text may come
        reply.tts_deadline = now + self.settings.tts.stall_timeout_s if reply.tts_ended else None
        if reply.held:
            reply.held_audio.append(pcm)  # never audio for an unconfirmed turn
            return
        self._emit(Play(reply.id, pcm))

    def on_tts_done(self, now: float, reply_id: str) -> None:
        reply = self._reply
        if reply is None or reply.id != reply_id or not reply.tts_ended:
            return
        reply.tts_done = True
        reply.tts_deadline = None
        if reply.held:
            reply.held_end = True
            return
        self._emit(EndUtterance(reply.id))
        if reply.audio_ms == 0:
            self._reply_finished(now, reply)  # nothing to play: PlaybackDone will not come

    def on_tts_failed(self, now: float, reply_id: str, reason: str, label: str = "error") -> None:
        reply = self._reply
        if reply is None or reply.id != reply_id:
            return
        self._provider_failed(now, "tts", reason, label)

    def on_playback_started(self, now: float, utterance_id: str, t: float) -> None:
        reply = self._reply
        if reply is None or reply.id != utterance_id:
            return
        reply.playing = True
        reply.heard_at = now
        self.state = State.AGENT_SPEAKING
        if reply.marks is not None and reply.marks.first_audio_out is None:
            reply.marks.first_audio_out = t
            self._emit(TurnDone(reply.marks))

    def on_playback_progress(self, now: float, utterance_id: str, heard_ms: int) -> None:
        """The leg's PlaybackProgress: the caller has heard ``heard_ms`` of the utterance (RTP:
        sent; stream: confirmed by playedStream). A cancelled reply's late reports are stale."""
        reply = self._reply
        if reply is None or reply.id != utterance_id:
            return
        reply.heard_ms = max(reply.heard_ms, heard_ms)
        reply.heard_at = now

    def _played_estimate(self, now: float, reply: Reply) -> int:
        """For the echo guard: what has gone out by now. The leg reports every few frames, so
        between reports the position runs on at real time (not while paused, never past the
        audio given, at most PLAYED_AHEAD_MS ahead): echo can come back before the next report."""
        if self._paused:
            return reply.heard_ms
        ahead = min((now - reply.heard_at) * 1000, PLAYED_AHEAD_MS)
        return int(min(reply.audio_ms, reply.heard_ms + max(0.0, ahead)))

    def on_playback_done(self, now: float, utterance_id: str, heard_ms: int | None = None) -> None:
        if heard_ms is not None:
            self.on_playback_progress(now, utterance_id, heard_ms)
        if utterance_id in self._fallback_utts:
            then = self._fallback_utts.pop(utterance_id)
            if then == "hangup":
                self._hangup("provider-failure")
            elif then == "transfer":
                self._start_transfer(now)
            elif then == "listen" and self._reply is None and self._turn is None:
                self._enter_listening(now)
            return
        reply = self._reply
        if reply is None or reply.id != utterance_id or not reply.tts_done:
            return
        self._reply_finished(now, reply)

    def _reply_finished(self, now: float, reply: Reply) -> None:
        self._reply = None
        self._candidate = None
        if self._paused:  # played out before the caller's speech was judged
            self._paused = False
            self._emit(ResumePlayback())
        if reply.kind == "say":
            reply.history_indices.append(len(self.history))
            self.history.append(Message("assistant", reply.round_text))
        self._emit(
            Record("agent", {"text": reply.spoken.text, "interrupted": False, "purpose": reply.purpose})
        )
        if reply.then == "hangup":
            self._hangup(reply.end_reason or "agent-ended")
        elif reply.then == "transfer":
            self._start_transfer(now)
        else:
            self._enter_listening(now, reset_silence=reply.purpose != "reprompt")

    def _enter_listening(self, now: float, reset_silence: bool = True) -> None:
        if self._turn is not None:
            return
        self.state = State.LISTENING
        if reset_silence:
            self._silence_since = now

    def _start_transfer(self, now: float) -> None:
        self._transfer_pending = True
        self.state = State.THINKING
        self._emit(Transfer(self.conv.transfer_target))

    def on_transfer_result(self, now: float, ok: bool) -> None:
        if not self._transfer_pending or self.ended:
            return
        self._transfer_pending = False
        self._emit(Record("transfer", {"ok": ok}))
        if ok:
            self._end("transferred")
            return
        self.history.append(Message("system", "The transfer failed; the caller is still on the line."))
        self._say(now, TRANSFER_FAILED_LINE, "transfer-failed")

    # -- fallback line ---------------------------------------------------------------------------
    def _fallback_then(self, now: float, then: str) -> None:
        """Play the pre-synthesised fallback line; ``then`` runs once it has been heard."""
        if not self._fallback_audio:
            if then == "hangup":
                self._hangup("provider-failure")
            elif then == "transfer":
                self._start_transfer(now)
            return
        utt = self._next_id("fb")
        self._fallback_utts[utt] = then
        self._emit(Play(utt, self._fallback_audio))
        self._emit(EndUtterance(utt))
        self._emit(Record("fallback", {"then": then}))

    def _fallback_playing(self) -> str | None:
        return next(iter(self._fallback_utts), None)

    def _cancel_fallbacks(self) -> None:
        # ClearPlayback dropped them; a pending hang-up/transfer after a fallback is kept.
        for utt, then in list(self._fallback_utts.items()):
            if then in ("continue", "listen"):
                del self._fallback_utts[utt]

    # -- DTMF and time -----------------------------------------------------------------------------
    def on_dtmf(self, now: float, digit: str) -> None:
        if self.ended:
            return
        self._dtmf += digit
        self._dtmf_deadline = now + self.conv.dtmf_collect_ms / 1000
        self._silence_since = now
        self._reprompted = False
        reply = self._reply
        if reply is not None and reply.interruptible and reply.playing:
            self._cancel_reply(now, interrupted=True)  # a key press is a deliberate barge-in
            self._emit(BargeIn(0))
            self._enter_listening(now)
        if digit == "#":
            self._flush_dtmf(now)

    def _flush_dtmf(self, now: float) -> None:
        digits, self._dtmf = self._dtmf, ""
        text = f"DTMF: {digits}"
        if self._turn is not None:
            self._turn.prefix = (self._turn.prefix + " " + text).strip()
            return
        if self._reply is not None:
            if not self._reply.interruptible:
                self._dtmf = digits  # wait until the line is over
                return
            self._cancel_reply(now, interrupted=True)
        self.history.append(Message("user", text))
        self._emit(Record("dtmf", {"digits": digits}))
        self._start_llm_reply(now, None, purpose="answer", interruptible=True)

    def on_tick(self, now: float) -> None:
        """Timers: DTMF collection, STT final, LLM/TTS stalls, dead air, silence, call length."""
        if self.ended:
            return
        conv = self.conv
        if self._dtmf and now >= self._dtmf_deadline:
            self._flush_dtmf(now)
        turn = self._turn
        if turn is not None and turn.awaiting_final and now >= turn.final_deadline:
            log.warning("no final transcript %.1f s after the endpoint; using what was heard",
                        conv.stt_final_timeout_s)
            self._complete_turn(now)
        reply = self._reply
        if reply is not None:
            self._reply_timers(now, reply)
        if self.ended:
            return
        if now - self._started >= conv.max_call_s and not self._closing():
            if self._reply is not None and self._reply.held:
                self._drop_preempt(now, "dropped")
            if self._reply is not None:
                self._cancel_reply(now, interrupted=True)
            self._turn = None
            self._candidate = None
            self._say(now, conv.goodbye_text, "max-duration", interruptible=False, then="hangup",
                      reason="max-duration")
            return
        if self.state is State.LISTENING and self._reply is None and self._turn is None and not self._dtmf \
                and not self._fallback_utts and not self._transfer_pending:
            silent = now - self._silence_since
            if silent >= conv.hangup_after_s:
                self._say(now, conv.hangup_text, "silence-hangup", interruptible=False, then="hangup",
                          reason="silence")
            elif silent >= conv.reprompt_after_s and not self._reprompted:
                self._reprompted = True
                self._say(now, conv.reprompt_text, "reprompt")

    def next_deadline(self) -> float:
        """The earliest clock time at which ``on_tick`` could act (math.inf: none). Before it,
        ``on_tick`` changes nothing; the driver sleeps until it instead of ticking on a period.
        It mirrors on_tick's timers one by one (the engine tests check it on every frame)."""
        if self.ended:
            return math.inf
        conv = self.conv
        turn = self._turn
        # Digits held while a line that may not be interrupted plays wait for its end (an
        # input, which re-reads this), not for their long-past collection deadline.
        held = turn is None and self._reply is not None and not self._reply.interruptible
        due = self._dtmf_deadline if self._dtmf and not held else math.inf
        if turn is not None and turn.awaiting_final:
            due = min(due, turn.final_deadline)
        reply = self._reply
        if reply is not None:
            if reply.llm_active and reply.llm_deadline is not None:
                due = min(due, reply.llm_deadline)
            if reply.tts_deadline is not None and not reply.tts_done:
                due = min(due, reply.tts_deadline)
            if reply.audio_ms == 0 and not reply.fallback_played and not reply.held \
                    and reply.purpose == "answer":
                due = min(due, reply.started + conv.fallback_after_s)
        if not self._closing():
            due = min(due, self._started + conv.max_call_s)
        if self.state is State.LISTENING and reply is None and turn is None and not self._dtmf \
                and not self._fallback_utts and not self._transfer_pending:
            silent = conv.hangup_after_s
            if not self._reprompted:
                silent = min(silent, conv.reprompt_after_s)
            due = min(due, self._silence_since + silent)
        return due

    def on_loop_late(self, now: float, late_s: float) -> None:
        """The driver's loop got round to this call ``late_s`` later than it should have (CPU
        starvation, a GC pass): the provider deadlines move back by as much, so bytes that
        arrived while the bridge was stalled, and are read just after, count as in time."""
        if self.ended or late_s <= 0:
            return
        reply = self._reply
        if reply is not None:
            if reply.llm_deadline is not None:
                reply.llm_deadline += late_s
            if reply.tts_deadline is not None:
                reply.tts_deadline += late_s
        turn = self._turn
        if turn is not None and turn.awaiting_final:
            turn.final_deadline += late_s

    def _closing(self) -> bool:
        reply = self._reply
        return reply is not None and reply.then == "hangup" and not reply.interruptible

    def _reply_timers(self, now: float, reply: Reply) -> None:
        """The provider deadlines. Each failure kind has one label: the providers' own
        timeouts are loose backstops that these always beat."""
        if reply.llm_active and reply.llm_deadline is not None and now >= reply.llm_deadline:
            label = "stall" if reply.got_token else "first-token-timeout"
            self._provider_failed(now, "llm", label, label)
            return
        if reply.tts_deadline is not None and not reply.tts_done and now >= reply.tts_deadline:
            label = "stall" if reply.audio_ms else "first-byte-timeout"
            self._provider_failed(now, "tts", label, label)
            return
        if reply.audio_ms == 0 and not reply.fallback_played and not reply.held \
                and reply.purpose == "answer" and now - reply.started >= self.conv.fallback_after_s:
            reply.fallback_played = True  # dead air: say something while the providers work
            self._fallback_then(now, "continue")
