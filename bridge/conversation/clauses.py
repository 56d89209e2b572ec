"""Cut streamed LLM text into clauses for the TTS, so speech starts before the reply is done."""

from __future__ import annotations

import re

# A sentence end, or a clause mark (, ; : dash), followed by white space.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[-–—])\s")


class ClauseSplitter:
    """``push`` text deltas, get the clauses completed so far; ``flush`` returns the rest.

    Sentence ends always cut; a comma or semicolon cuts once the clause has ``min_clause_chars``
    (so "Well, ..." does not become a one-word TTS request); a clause with no punctuation is
    cut at a word boundary after ``max_clause_chars`` (an LLM that never punctuates).

    The reply's first clause is also cut after ``first_clause_words`` words when no
    punctuation came by then: the caller waits for exactly that text, and at LLM speed (tens
    of ms a token) a long opening sentence would hold the first audio back by 100-200 ms.
    """

    def __init__(self, min_clause_chars: int = 12, max_clause_chars: int = 160,
                 first_clause_words: int = 0) -> None:
        self._buf = ""
        self._min = min_clause_chars
        self._max = max_clause_chars
        self._first_words = first_clause_words
        self._emitted = False

    def push(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            clause, self._buf = self._buf[:cut], self._buf[cut:]
            if clause.strip():
                out.append(clause.strip())
                self._emitted = True
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    def _next_cut(self) -> int | None:
        buf = self._buf
        m = _SENTENCE_END.search(buf)
        best = m.end() if m else None
        for cm in _CLAUSE_END.finditer(buf):
            if best is not None and cm.end() >= best:
                break
            if len(buf[: cm.start()].strip()) >= self._min:
                best = cm.end()
                break
        if best is not None:
            return best
        if not self._emitted and self._first_words > 0:
            words = list(re.finditer(r"\S+\s", buf))
            if len(words) >= self._first_words:
                return words[self._first_words - 1].end()
        if len(buf) > self._max:
            space = buf.rfind(" ", 0, self._max)
            return space + 1 if space > 0 else self._max
        return None
