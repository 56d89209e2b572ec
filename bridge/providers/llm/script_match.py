"""Matching what the caller said (or pressed) against the script's intents. Pure functions.

Offline recognition gets a quarter to two thirds of the words right, often as near misses
("moderator" for "operator", "opened" for "open"), so matching is by any keyword, fuzzily:
a heard word counts for a keyword when it is the same word, starts with it (open ->
opening), or is close by edit similarity; short words (<= 3 letters) must match exactly,
since fuzzy short words match everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

from bridge.providers.llm.script_model import Intent

_WORD = re.compile(r"[a-z0-9']+")
_DTMF_TAGGED = re.compile(r"(?i:\b(?:dtmf|pressed)\b)\W*([0-9*#A-D]+)(?![a-z])")
_DTMF_ONLY = re.compile(r"^\s*([0-9*#]+)\s*$")
_SHORT = 3


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


def dtmf_keys(text: str) -> str:
    """Keys pressed, if the message is a DTMF event ("DTMF: 1", "[dtmf 12#]", "pressed 0",
    or just "1"); "" for speech."""
    match = _DTMF_TAGGED.search(text) or _DTMF_ONLY.match(text)
    return match.group(1).upper() if match else ""


def similar(heard: str, keyword: str, threshold: float) -> bool:
    if heard == keyword:
        return True
    if len(heard) <= _SHORT or len(keyword) <= _SHORT:
        return False
    if heard.startswith(keyword):
        return True
    return SequenceMatcher(None, heard, keyword).ratio() >= threshold


def _phrase_found(heard: list[str], phrase: list[str], threshold: float) -> bool:
    if not phrase:
        return False
    target = " ".join(phrase)
    width = len(phrase)
    # compare against every window of about the phrase's length
    for size in {max(1, width - 1), width, width + 1}:
        for start in range(max(1, len(heard) - size + 1)):
            window = " ".join(heard[start : start + size])
            if window and SequenceMatcher(None, window, target).ratio() >= threshold:
                return True
    return False


def score(intent: Intent, heard: list[str], threshold: float) -> float:
    """How strongly the heard words point at the intent (sum of matched keyword weights)."""
    total = 0.0
    for keyword, weight in intent.keywords.items():
        if any(similar(word, keyword, threshold) for word in heard):
            total += weight
    for phrase in intent.phrases:
        if _phrase_found(heard, words(phrase), threshold):
            total += intent.phrase_weight
    return total


@dataclass(frozen=True, slots=True)
class Match:
    intent: Intent | None  # None: nothing matched well enough (use the fallback)
    score: float


def best_intent(candidates: list[Intent], text: str, threshold: float, min_score: float, state: str) -> Match:
    """The intent for one user message. DTMF decides outright; otherwise the highest keyword
    score at or above ``min_score`` wins, ties going to intents bound to ``state``, then to
    the one listed first."""
    keys = dtmf_keys(text)
    if keys:
        for intent in _state_first(candidates, state):
            if keys in intent.dtmf:
                return Match(intent, float("inf"))
        return Match(None, 0.0)
    heard = words(text)
    best: Intent | None = None
    best_score = 0.0
    for intent in _state_first(candidates, state):
        value = score(intent, heard, threshold)
        if value > best_score:
            best, best_score = intent, value
    if best is None or best_score < min_score:
        return Match(None, best_score)
    return Match(best, best_score)


def _state_first(candidates: list[Intent], state: str) -> list[Intent]:
    return sorted(candidates, key=lambda i: 0 if state in i.states else 1)  # stable: file order kept
