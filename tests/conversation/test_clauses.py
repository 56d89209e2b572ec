"""Cutting streamed LLM text into TTS clauses."""

from __future__ import annotations

from bridge.conversation.clauses import ClauseSplitter


def _feed(splitter: ClauseSplitter, text: str) -> list[str]:
    out: list[str] = []
    for token in text.split(" "):  # an LLM streams about a word at a time
        out += splitter.push(token + " ")
    return out + splitter.flush()


def test_sentences_and_long_enough_clauses_cut() -> None:
    text = "Well, we are open from nine to one on Saturday, and closed on Sunday. Anything else?"
    assert _feed(ClauseSplitter(), text) == [
        "Well, we are open from nine to one on Saturday,", "and closed on Sunday.", "Anything else?",
    ]


def test_first_clause_words_cuts_only_the_opening_of_a_reply() -> None:
    text = "We are open from nine to one on Saturday and closed on Sunday. Anything else today?"
    assert _feed(ClauseSplitter(first_clause_words=6), text) == [
        "We are open from nine to", "one on Saturday and closed on Sunday.", "Anything else today?",
    ]
    # Off by default: the opening sentence stays whole.
    whole = "We are open from nine to one on Saturday and closed on Sunday."
    assert _feed(ClauseSplitter(), text)[0] == whole
    # A short opening sentence is cut at its end as always.
    assert _feed(ClauseSplitter(first_clause_words=6), "Sure! We are open until six.")[0] == "Sure!"
