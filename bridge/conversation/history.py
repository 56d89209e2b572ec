"""What of the conversation goes with an LLM request: the system prompt and the caller's last
``conversation.history_max_turns`` turns. The engine keeps the whole history (truncation after
a barge-in indexes into it); only the request is cut.

A turn starts at a user message and runs to the next one (the agent's answer, its tool calls
and their results). The cut falls on a user message, and moves back if a tool result after it
answers a call made before it: OpenAI refuses (HTTP 400) a tool message without its call.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.providers.base import Message


def recent_turns(history: Sequence[Message], max_turns: int) -> tuple[Message, ...]:
    """``history`` with only its leading system messages and the last ``max_turns`` turns
    (0: all of it)."""
    if max_turns <= 0:
        return tuple(history)
    head = 0
    while head < len(history) and history[head].role == "system":
        head += 1
    cut = len(history)
    turns = 0
    for i in range(len(history) - 1, head - 1, -1):
        if history[i].role == "user":
            turns += 1
            cut = i
            if turns == max_turns:
                break
    if not any(m.role == "user" for m in history[head:cut]):
        return tuple(history)  # no more turns than that: nothing to cut (the greeting stays)
    cut = _keep_calls_with_results(history, head, cut)
    if cut <= head:
        return tuple(history)
    return (*history[:head], *history[cut:])


def _keep_calls_with_results(history: Sequence[Message], head: int, cut: int) -> int:
    """The cut moved back to the assistant message whose tool call a kept result answers."""
    while True:  # a moved cut keeps more results, whose calls may lie further back
        kept_results = {m.tool_call_id for m in history[cut:] if m.role == "tool"}
        moved = cut
        for i in range(cut - 1, head - 1, -1):
            if any(c.id in kept_results for c in history[i].tool_calls):
                moved = i
        if moved == cut:
            return cut
        cut = moved
