"""The scripted agent's decisions: which reply (and tool call) answers a conversation.

Stateless by design: one LLM object serves every call, so the dialogue state is rebuilt from
the history each turn by replaying the caller's messages through the rules (a handful of
messages; microseconds). The same history always gives the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.providers.base import Message
from bridge.providers.llm.script_match import best_intent
from bridge.providers.llm.script_model import Intent, Script


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    intent: str = ""  # "" for the fallback or greeting
    tool: str = ""
    tool_args: dict[str, Any] = field(default_factory=dict)
    state: str = ""  # the dialogue state after this reply
    turn: int = 0  # how many caller messages the history holds


class ScriptAgent:
    def __init__(self, script: Script) -> None:
        self.script = script

    def intents_for(self, state: str) -> list[Intent]:
        return [i for i in self.script.intents if not i.states or state in i.states]

    def match(self, text: str, state: str) -> Intent | None:
        opts = self.script.script
        return best_intent(self.intents_for(state), text, opts.match_threshold, opts.min_score, state).intent

    def respond(self, messages: Sequence[Message]) -> Reply | None:
        """The answer to the latest caller message; None when the history does not end with
        one (e.g. after a tool result) and there is nothing to say."""
        user_turns = [m.content for m in messages if m.role == "user"]
        if not messages or messages[-1].role != "user":
            greeting = self.script.script.greeting
            if not user_turns and greeting:
                return Reply(greeting, state=self.script.script.initial_state)
            return None
        state = self.script.script.initial_state
        for text in user_turns[:-1]:  # replay earlier turns to find the current state
            intent = self.match(text, state)
            if intent is not None and intent.next_state:
                state = intent.next_state
        intent = self.match(user_turns[-1], state)
        turn = len(user_turns)
        if intent is None:
            return Reply(self.script.fallback_for(state), state=state, turn=turn)
        return Reply(
            intent.reply,
            intent=intent.name,
            tool=intent.tool,
            tool_args=dict(intent.tool_args),
            state=intent.next_state or state,
            turn=turn,
        )
