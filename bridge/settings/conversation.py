"""[conversation] turn-taking settings (DESIGN.md, Turn contract)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bridge.settings.base import Section


class VadSettings(Section):
    # webrtc+silero: cheap webrtc pre-filter, silero confirms (resists line noise)
    engine: Literal["webrtc", "silero", "webrtc+silero"] = "webrtc+silero"
    webrtc_mode: int = Field(3, ge=0, le=3)
    silero_threshold: float = Field(0.5, gt=0, lt=1)


class BargeInSettings(Section):
    enabled: bool = True
    min_speech_ms: int = Field(250, ge=0)
    min_words: int = Field(0, ge=0)
    # Interim transcripts made only of these words ("mm-hm", "yeah") never count as a barge-in.
    backchannel_words: list[str] = Field(
        default_factory=lambda: [
            "mm", "mhm", "mmhm", "mm-hm", "hmm", "hm", "uh-huh", "uh", "huh", "um", "ah", "oh",
            "yeah", "ok", "okay", "right", "sure", "alright",
        ]
    )
    # Pause-on-onset: this much caller speech over the agent pauses its playout at once (the
    # queue is kept); confirmed by min_speech_ms/min_words it becomes a barge-in (cleared),
    # else the playout resumes where it paused after max_gap_ms of silence. False: no pause.
    # 20 = the first frame the VAD, echo guard and level gate call the caller's: 20 ms
    # sooner on the wire than 40, and no more pauses from background talk (README).
    pause_on_onset: bool = True
    pause_after_ms: int = Field(20, ge=20, le=1000)
    # Caller speech starting this soon after the end of their last turn's speech continues
    # that turn: the reply (started or not) is cancelled once the speech is confirmed, and the
    # LLM gets both parts as one user turn (a 300-800 ms pause inside one request).
    merge_window_ms: int = Field(1000, ge=0, le=5000)
    # Gap of silence that ends a would-be barge-in that never got confirmed (a cough).
    max_gap_ms: int = Field(200, ge=20)
    # Echo guard: while the agent talks, caller audio no louder than the agent's own recent
    # audio minus this echo return loss is taken for echo, not speech.
    echo_guard: bool = True
    echo_return_loss_db: float = Field(6.0, ge=0, le=60)
    echo_tail_ms: int = Field(300, ge=20, le=2000)


class HttpToolSettings(Section):
    name: str
    description: str = ""
    parameters: dict[str, object] = Field(default_factory=dict)  # JSON schema
    url: str
    timeout_s: float = Field(3.0, gt=0)


class ConversationSettings(Section):
    vad: VadSettings = Field(default_factory=VadSettings)  # type: ignore[arg-type]
    endpointing_ms: int = Field(300, ge=0)
    # Adaptive end of turn: the silence that ends a turn depends on the transcript so far:
    # endpointing_short_ms after a complete sentence or question, endpointing_long_ms when it
    # stops mid-phrase ("and", "my number is", a digit string), endpointing_ms otherwise.
    adaptive_endpointing: bool = True
    endpointing_short_ms: int = Field(200, ge=0)
    endpointing_long_ms: int = Field(800, ge=0)
    # Preemptive generation: after this much silence the LLM (and the TTS) start on the best
    # transcript so far; text and audio are held until the turn is confirmed, and the reply
    # is started again if the final transcript differs or the caller goes on.
    preemptive_generation: bool = True
    preemptive_after_ms: int = Field(20, ge=20, le=2000)
    # With preemptive generation, ask the STT for its final at that same moment (not after the
    # endpoint window). auto: only on Deepgram, whose Finalize just flushes the segment; an
    # utterance decoder such as pocketsphinx loses accuracy (and CPU) when cut at every pause.
    early_finalize: Literal["auto", "on", "off"] = "auto"
    # false: start preemptively only on finalized text (the early final), not on an interim;
    # one LLM request per turn instead of a restart whenever the last interim lags the final.
    preemptive_on_interim: bool = True
    # Level gate: once level_gate_learn_ms of the caller's own speech was heard, speech this
    # many dB below their level (200 ms windows vs their loud syllables) does not open a turn
    # or a barge-in (background talk, a TV); inside a turn level_gate_hold_db more is allowed.
    # Before that, and always, speech under level_gate_floor_dbfs does not count (the caller's
    # nominal phone level is -26 dBFS, ITU-T P.56). bench/background_talk.py: 15 dB keeps a TV
    # 20-30 dB under the caller out once they spoke; 8-12 dB also hold off more of a TV 10-15
    # dB down, but pause the agent late when the caller cuts in quieter than their own level
    # (10 dB quieter: up to 1.5 s at 8, ~1 s at 10 and 12, 180 ms at 15). The floor at -50
    # hears a caller 20 dB under nominal from the first word (at -40: never); the price: a TV
    # 20-25 dB under a nominal caller opens turns before the caller's first words. 0: off.
    level_gate_db: float = Field(15.0, ge=0, le=60)
    level_gate_learn_ms: int = Field(1000, ge=20)
    level_gate_floor_dbfs: float = Field(-50.0, ge=-90, le=0)
    level_gate_hold_db: float = Field(10.0, ge=0, le=60)
    barge_in: BargeInSettings = Field(default_factory=BargeInSettings)  # type: ignore[arg-type]
    system_prompt_file: str = "config/agent-prompt.txt"
    greeting: str = "Hello! How can I help you today?"
    greeting_interruptible: bool = True
    reprompt_after_s: float = Field(8.0, gt=0)
    reprompt_text: str = "Are you still there?"
    hangup_after_s: float = Field(20.0, gt=0)
    hangup_text: str = "I haven't heard from you, so I'll hang up now. Goodbye!"
    max_call_s: float = Field(900.0, gt=0)
    goodbye_text: str = "Thank you for calling. Goodbye!"
    fallback_text: str = "Sorry, I'm having trouble right now. Please hold on a moment."
    transfer_target: str = ""  # SIP URI or E.164 number for transfer_call
    transcripts_dir: str = "var/transcripts"
    http_tools: list[HttpToolSettings] = Field(default_factory=list)
    # Caller audio kept from before VAD fires and sent to the STT with the turn (word onsets).
    preroll_ms: int = Field(300, ge=0, le=2000)
    # After the endpoint, how long to wait for the STT's final before using what it has.
    stt_final_timeout_s: float = Field(1.5, gt=0)
    # No agent audio this long after the end of a turn: the fallback line plays (no dead air).
    fallback_after_s: float = Field(2.0, gt=0)
    # Caller DTMF digits are collected until '#' or this long without a new digit.
    dtmf_collect_ms: int = Field(800, ge=0)
    # LLM rounds per reply (tool call -> result -> LLM again) before the reply is cut short.
    max_tool_rounds: int = Field(4, ge=1, le=20)
    # The caller's last this-many turns (and what followed each) go with every LLM request, after
    # the system prompt; older ones stay in the transcript only. Each request re-sends what it
    # carries, so an uncapped history costs more with every turn (0: no cap).
    history_max_turns: int = Field(20, ge=0)
    # Cut a reply's first clause after this many words if no punctuation came yet (0: off).
    # Speech starts 50-200 ms sooner when replies open with long sentences, at some cost in
    # prosody; the TTS gets the rest of the sentence as the next clause. 4 measured best on
    # bench/voice_to_voice.py (9-word opening: p50 785 ms at 4, 840 at 6, 869 off; 2026-12-01).
    first_clause_words: int = Field(4, ge=0, le=50)
