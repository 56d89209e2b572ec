"""The tools the engine offers the LLM: built-ins (end_call, transfer_call, send_dtmf) and the
HTTP tools declared in the settings."""

from __future__ import annotations

from bridge.providers.base import ToolSpec
from bridge.settings.conversation import ConversationSettings

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
SEND_DTMF = "send_dtmf"
BUILTIN = (END_CALL, TRANSFER_CALL, SEND_DTMF)

_END = ToolSpec(
    END_CALL,
    "End the phone call. Say goodbye in the same reply; the call ends once it has been heard.",
    {"type": "object", "properties": {"reason": {"type": "string"}}},
)
_TRANSFER = ToolSpec(
    TRANSFER_CALL,
    "Transfer the caller to a human colleague. Tell the caller first that you are transferring them.",
    {"type": "object", "properties": {"reason": {"type": "string"}}},
)
_DTMF = ToolSpec(
    SEND_DTMF,
    "Send DTMF key presses on the call (e.g. to navigate another phone menu).",
    {
        "type": "object",
        "properties": {"digits": {"type": "string", "description": "0-9, *, #, A-D"}},
        "required": ["digits"],
    },
)


def tool_specs(conv: ConversationSettings) -> tuple[ToolSpec, ...]:
    """transfer_call is offered only when a transfer target is configured: the model never
    chooses where a caller goes."""
    specs = [_END, _DTMF]
    if conv.transfer_target:
        specs.insert(1, _TRANSFER)
    for tool in conv.http_tools:
        params = dict(tool.parameters) or {"type": "object", "properties": {}}
        specs.append(ToolSpec(tool.name, tool.description or tool.name, params))
    return tuple(specs)
