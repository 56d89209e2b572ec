"""The LLM request carries the system prompt and the caller's last turns only
(conversation.history_max_turns); the engine's own history stays whole."""

from __future__ import annotations

from bridge.conversation import actions as act
from bridge.conversation.history import recent_turns
from bridge.providers.base import Message, ToolCall
from tests.conversation.harness import Harness

SYSTEM = Message("system", "You are a test agent.")


def _turns(n: int) -> list[Message]:
    out = [SYSTEM, Message("assistant", "Hi, how can I help?")]
    for i in range(n):
        out += [Message("user", f"question {i}"), Message("assistant", f"answer {i}")]
    return out


def test_the_system_prompt_and_the_last_turns_are_kept() -> None:
    history = _turns(30)
    sent = recent_turns(history, 3)
    assert sent[0] == SYSTEM
    assert [m.content for m in sent[1:]] == [
        "question 27", "answer 27", "question 28", "answer 28", "question 29", "answer 29"
    ]


def test_nothing_is_cut_up_to_the_cap_and_zero_means_no_cap() -> None:
    history = _turns(3)
    assert recent_turns(history, 3) == tuple(history)  # the greeting stays too
    assert recent_turns(history, 5) == tuple(history)
    assert recent_turns(_turns(40), 0) == tuple(_turns(40))
    assert recent_turns([], 2) == ()


def test_a_tool_result_is_never_sent_without_its_call() -> None:
    call = ToolCall("c1", "send_dtmf", {"digits": "1"})
    history = [
        SYSTEM,
        Message("user", "press one"),
        Message("assistant", "Pressing.", tool_calls=(call,)),
        # a result that came in after the caller spoke again (the cut would fall before it)
        Message("user", "and then?"),
        Message("tool", "sent 1", tool_call_id="c1"),
        Message("assistant", "Done."),
        Message("user", "thanks"),
    ]
    sent = recent_turns(history, 2)
    assert sent[0] == SYSTEM
    assert sent[1] == history[2]  # the call went back in with its result
    assert sent[1:] == tuple(history[2:])
    # the usual order (result right after its call) cuts at the user message
    usual = [SYSTEM, Message("user", "press one"), history[2], Message("tool", "sent 1", tool_call_id="c1"),
             Message("assistant", "Done."), Message("user", "thanks"), Message("assistant", "Bye.")]
    assert recent_turns(usual, 1) == (SYSTEM, usual[5], usual[6])


def test_a_call_kept_for_one_result_brings_back_the_calls_of_the_results_it_keeps() -> None:
    """Two late results: keeping c1's call keeps c0's result too, so c0's call comes back."""
    c0, c1 = ToolCall("c0", "lookup", {}), ToolCall("c1", "lookup", {})
    history = [
        SYSTEM,
        Message("assistant", "Looking.", tool_calls=(c0,)),
        Message("user", "and the other?"),
        Message("assistant", "Also looking.", tool_calls=(c1,)),
        Message("tool", "r0", tool_call_id="c0"),
        Message("user", "thanks"),
        Message("tool", "r1", tool_call_id="c1"),
    ]
    sent = recent_turns(history, 1)
    calls = {c.id for m in sent for c in m.tool_calls}
    assert {m.tool_call_id for m in sent if m.role == "tool"} <= calls
    assert sent[1:] == tuple(history[1:])


def test_the_engine_sends_only_the_last_turns_and_keeps_the_whole_history() -> None:
    h = Harness(history_max_turns=2)
    h.greet()
    for i in range(6):
        h.say_turn(f"question number {i}.")
        rid = h.reply_id
        h.llm(f"Answer {i}.")
        h.tts(rid, 200)
        h.play(rid, 200)
    request = h.last(act.StartLlm).messages
    assert request[0].role == "system"
    assert [m.content for m in request[1:]] == [
        "question number 4.", "Answer 4.", "question number 5."
    ]
    assert sum(1 for m in h.engine.history if m.role == "user") == 6
