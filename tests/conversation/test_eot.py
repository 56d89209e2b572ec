"""Adaptive end of turn: the silence that ends a turn follows the shape of what was said."""

from __future__ import annotations

import pytest

from bridge.conversation import actions as act
from bridge.conversation.eot import end_of_turn_ms, turn_shape
from tests.conversation.harness import Harness, make_settings


@pytest.mark.parametrize(("text", "shape"), [
    ("Are you open on Saturday?", "complete"),
    ("I would like to make an appointment.", "complete"),
    ("where are you located", "complete"),
    ("I would like to book and", "incomplete"),
    ("my number is", "incomplete"),
    ("my number is 0 7 9", "incomplete"),
    ("my number is 079.", "incomplete"),
    ("it's seven three", "incomplete"),
    ("hello", "unknown"),
    ("", "unknown"),
])
def test_turn_shape(text: str, shape: str) -> None:
    assert turn_shape(text) == shape


def test_windows_come_from_settings() -> None:
    conv = make_settings(adaptive_endpointing=True, endpointing_ms=300, endpointing_short_ms=150,
                         endpointing_long_ms=900).conversation
    assert end_of_turn_ms("Is it open?", conv) == 150
    assert end_of_turn_ms("my card number is 4111", conv) == 900
    assert end_of_turn_ms("hello", conv) == 300
    off = make_settings(adaptive_endpointing=False).conversation
    assert end_of_turn_ms("Is it open?", off) == off.endpointing_ms


def _finalize_after(h: Harness, interim: str) -> int:
    """Silent frames until the engine asks the STT to finalize, in ms."""
    h.greet()
    h.frames(30, True)
    h.transcript(interim, final=False)
    for n in range(1, 80):
        h.frames(1, False)
        if h.of(act.SttFinalize):
            return n * 20
    raise AssertionError("no endpoint")


def test_complete_question_ends_sooner() -> None:
    h = Harness(adaptive_endpointing=True, endpointing_short_ms=200)
    assert _finalize_after(h, "Are you open on Saturday?") == 200


def test_digits_in_progress_wait_longer() -> None:
    h = Harness(adaptive_endpointing=True, endpointing_long_ms=800)
    assert _finalize_after(h, "my number is 0 7 9") == 800


def test_unknown_shape_keeps_the_base_window() -> None:
    h = Harness(adaptive_endpointing=True)
    assert _finalize_after(h, "hello") == 300
