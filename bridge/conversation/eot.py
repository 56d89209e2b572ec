"""Adaptive end of turn: how much silence ends the caller's turn, from what they said so far.

A complete sentence or question ("Are you open on Saturday?") is answered after a short
silence; a phrase that stops mid-way ("my number is 0 7 9", "I'd like to book and") gets a
long one, because the caller is still looking for the next words. Plain text rules: cheap,
deterministic, and they only move the window between two configured bounds.
"""

from __future__ import annotations

import re
from typing import Literal

from bridge.settings.conversation import ConversationSettings

Shape = Literal["complete", "incomplete", "unknown"]

# A turn that stops on one of these words is not over ("... and", "my number is").
_CONTINUATION = frozenset(
    "and or but so because if then that which who the a an to of for with from at in on by "
    "my your our their his her its is are was were am be i'm it's like um uh er erm".split()
)
_QUESTION_OPENERS = frozenset(
    "what where when who whom whose why how which is are am was were do does did can could "
    "will would should shall may might have has had".split()
)
_NUMBER_WORDS = frozenset("zero oh one two three four five six seven eight nine double triple".split())
_TOKEN = re.compile(r"[\w'+#*-]+|[.?!]")


def turn_shape(text: str) -> Shape:
    tokens = _TOKEN.findall(text.lower())
    if not tokens:
        return "unknown"
    last = tokens[-1]
    words = [t for t in tokens if t not in ".?!"]
    if not words:
        return "unknown"
    tail = words[-1]
    if last in ".?!":
        # "my number is 0 7 9." is still a digit string in progress (STTs punctuate pauses)
        return "incomplete" if _digits_in_progress(words) else "complete"
    if tail in _CONTINUATION or _digits_in_progress(words):
        return "incomplete"
    if words[0] in _QUESTION_OPENERS and len(words) >= 3:
        return "complete"  # an unpunctuated question ("where are you located")
    return "unknown"


def _digits_in_progress(words: list[str]) -> bool:
    """The turn ends on a digit string (phone, card, booking number) that may go on."""
    tail = words[-1]
    return any(c.isdigit() for c in tail) or (tail in _NUMBER_WORDS and len(words) >= 2
                                              and (words[-2] in _NUMBER_WORDS or words[-2] == "is"))


def end_of_turn_ms(text: str, conv: ConversationSettings) -> int:
    """The silence (ms) that ends a turn whose transcript so far is ``text``."""
    if not conv.adaptive_endpointing:
        return conv.endpointing_ms
    shape = turn_shape(text)
    if shape == "complete":
        return min(conv.endpointing_short_ms, conv.endpointing_ms)
    if shape == "incomplete":
        return max(conv.endpointing_long_ms, conv.endpointing_ms)
    return conv.endpointing_ms
