"""Per-turn latency marks (DESIGN.md, Turn contract) and the bridge overhead derived from them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TurnMarks:
    """Clock times (s) of one turn. Provider waits are the spans the bridge cannot shorten:
    the endpointing window and STT final, the LLM producing its first clause, the TTS
    producing its first byte. The rest of voice-to-voice is the bridge's own overhead."""

    user_speech_end: float
    turn_end: float = 0.0  # the engine knew the turn was over (endpoint + final)
    stt_final: float | None = None
    llm_start: float | None = None
    llm_first_token: float | None = None
    first_clause: float | None = None  # the first clause was complete and went to the TTS
    tts_first_byte: float | None = None
    first_audio_out: float | None = None  # the first agent packet of the reply left
    # The reply was generated preemptively (before turn_end): its LLM and TTS waits overlap
    # the end of the turn, so the overhead is what came after both were ready.
    preempted: bool = False

    def voice_to_voice(self) -> float | None:
        if self.first_audio_out is None:
            return None
        return self.first_audio_out - self.user_speech_end

    def overhead(self) -> float | None:
        if None in (self.first_audio_out, self.llm_start, self.first_clause, self.tts_first_byte):
            return None
        assert self.first_audio_out is not None and self.llm_start is not None
        assert self.first_clause is not None and self.tts_first_byte is not None
        if self.preempted:
            return max(0.0, self.first_audio_out - max(self.turn_end, self.tts_first_byte))
        llm_wait = self.first_clause - self.llm_start
        tts_wait = self.tts_first_byte - self.first_clause
        return max(0.0, self.first_audio_out - self.turn_end - llm_wait - tts_wait)

    def as_dict(self) -> dict[str, float]:
        """Milliseconds after user_speech_end, for logs, transcripts and metrics."""
        out: dict[str, float] = {}
        # turn_end and llm_start too: with them a turn's time splits into the endpointing,
        # the LLM's own wait and the bridge's gaps between stages (bench/profiles/latency_150.md)
        for name in ("turn_end", "stt_final", "llm_start", "llm_first_token", "first_clause",
                     "tts_first_byte", "first_audio_out"):
            value = getattr(self, name)
            if value is not None and not (name == "turn_end" and value == 0.0):  # 0.0: not yet
                out[name] = round((value - self.user_speech_end) * 1000, 1)
        v2v = self.voice_to_voice()
        if v2v is not None:
            out["voice_to_voice"] = round(v2v * 1000, 1)
        over = self.overhead()
        if over is not None:
            out["bridge_overhead"] = round(over * 1000, 1)
        if self.preempted:
            out["preempted"] = 1.0
        return out
