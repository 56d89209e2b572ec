"""Map "the caller heard N ms of this utterance" back onto the words of the reply.

The engine records, for each clause, how much audio the TTS had produced when it took the
clause (a streaming TTS takes the next clause once the previous one is synthesised), so each
clause's words lie on a known stretch of audio; within a clause, time is spread by characters.
A TTS that takes all text at once gives no usable stretches: then characters are spread
evenly over the audio (or, while synthesis is still running, at a nominal speaking rate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"\S+")
NOMINAL_MS_PER_CHAR = 65.0  # ~165 words a minute


@dataclass(slots=True)
class _Clause:
    text: str
    start_ms: float | None = None


class SpokenText:
    def __init__(self) -> None:
        self._clauses: list[_Clause] = []

    @property
    def text(self) -> str:
        return " ".join(c.text for c in self._clauses)

    def add(self, clause: str) -> int:
        self._clauses.append(_Clause(clause))
        return len(self._clauses) - 1

    def mark_start(self, index: int, audio_ms: float) -> None:
        if 0 <= index < len(self._clauses) and self._clauses[index].start_ms is None:
            self._clauses[index].start_ms = audio_ms

    def heard(self, heard_ms: float, audio_ms: float, complete: bool) -> str:
        """The words the caller heard: each word counts once its middle has been played."""
        if heard_ms <= 0 or not self._clauses:
            return ""
        if complete and heard_ms >= audio_ms:
            return self.text
        spans = self._spans(audio_ms)
        if spans is None:
            total = self.text
            per_char = audio_ms / len(total) if complete and total else NOMINAL_MS_PER_CHAR
            return _words_before(total, 0.0, per_char, heard_ms)
        words: list[str] = []
        for clause, (start, end) in zip(self._clauses, spans, strict=True):
            if start >= heard_ms:
                break
            per_char = (end - start) / max(1, len(clause.text))
            part = _words_before(clause.text, start, per_char, heard_ms)
            if part:
                words.append(part)
            if part != clause.text:
                break
        return " ".join(words)

    def _spans(self, audio_ms: float) -> list[tuple[float, float]] | None:
        """Audio stretch of each clause, or None when the starts do not describe the audio."""
        starts = [c.start_ms for c in self._clauses]
        taken = [s for s in starts if s is not None]
        if not taken or starts[0] is None:
            return None
        spans: list[tuple[float, float]] = []
        for i, start in enumerate(starts):
            if start is None:  # not taken by the TTS yet: nothing of it can have been heard
                spans.append((audio_ms, audio_ms))
                continue
            nxt = starts[i + 1] if i + 1 < len(starts) else None
            end = nxt if nxt is not None else audio_ms
            if end <= start and nxt is not None:
                return None  # the TTS took text ahead of its audio: stretches are meaningless
            spans.append((start, max(start, end)))
        return spans


def _words_before(text: str, start_ms: float, ms_per_char: float, heard_ms: float) -> str:
    last_end = 0
    for m in _WORD.finditer(text):
        middle = start_ms + (m.start() + m.end()) / 2 * ms_per_char
        if middle > heard_ms:
            break
        last_end = m.end()
    return text[:last_end]
