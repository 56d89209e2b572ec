"""What the real chat-completions API refuses with HTTP 400 before streaming anything.

Encoded from the API's documented behaviour (vendor docs): every
assistant ``tool_calls`` id must be answered by a ``tool`` message before the next other
message, a ``tool`` message must answer such a call, roles are from a fixed set, and o-series
(reasoning) models refuse ``max_tokens`` and a non-default ``temperature``. The messages are
the API's own wording, so a client that quotes or parses them sees what it would in production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
O_SERIES = re.compile(r"^o\d")  # o1, o3-mini, o4-mini ...


@dataclass(frozen=True)
class Refusal:
    message: str
    param: str | None
    code: str | None


def is_o_series(model: str) -> bool:
    return bool(O_SERIES.match(model))


def check_request(body: dict[str, Any]) -> Refusal | None:
    """The first reason the API would refuse ``body``, or None."""
    model = str(body.get("model", ""))
    if is_o_series(model):
        if "max_tokens" in body:
            return Refusal(
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return Refusal(
                f"Unsupported value: 'temperature' does not support {temperature} with this model. "
                "Only the default (1) value is supported.",
                "temperature",
                "unsupported_value",
            )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Refusal("[] is too short - 'messages'", "messages", "empty_array")
    return _check_messages(messages)


def _check_messages(messages: list[Any]) -> Refusal | None:
    unanswered: list[str] = []  # tool_call ids of the last assistant message not yet answered
    opened_at = 0
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ROLES:
            return Refusal(
                f"Invalid value: {role!r}. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if call_id not in unanswered:
                return Refusal(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                    None,
                )
            unanswered.remove(call_id)
            continue
        if unanswered:
            return _unanswered(opened_at, unanswered)
        if role == "assistant" and msg.get("tool_calls"):
            unanswered = [str(c.get("id")) for c in msg["tool_calls"]]
            opened_at = i
    if unanswered:
        return _unanswered(opened_at, unanswered)
    return None


def _unanswered(index: int, ids: list[str]) -> Refusal:
    return Refusal(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to "
        "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(ids),
        f"messages.[{index}].role",
        None,
    )
