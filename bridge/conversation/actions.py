"""What the engine asks its driver to do. Plain data: the engine itself does no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.conversation.marks import TurnMarks
from bridge.providers.base import Message, ToolCall, ToolSpec

ProviderKind = Literal["stt", "llm", "tts"]


@dataclass(frozen=True, slots=True)
class SttAudio:
    pcm: bytes


@dataclass(frozen=True, slots=True)
class SttFinalize:
    pass


@dataclass(frozen=True, slots=True)
class UseProvider:
    """Switch ``kind`` to the provider at ``index`` of its failover list (STT: open a stream)."""

    kind: ProviderKind
    index: int


@dataclass(frozen=True, slots=True)
class ProviderFailed:
    """``label`` is the failure metric's label, one of a few words (the engine's own timeouts:
    first-token-timeout, stall, first-byte-timeout; a provider's error: retryable, fatal,
    timeout, network, error); ``reason`` is the text for the log and the transcript."""

    kind: ProviderKind
    index: int
    reason: str
    label: str = "error"


@dataclass(frozen=True, slots=True)
class StartLlm:
    reply_id: str  # CancelReply(reply_id) stops this round
    stream_id: str  # LLM events must carry it back; stale ones are ignored
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]


@dataclass(frozen=True, slots=True)
class StartTts:
    reply_id: str


@dataclass(frozen=True, slots=True)
class TtsText:
    reply_id: str
    text: str


@dataclass(frozen=True, slots=True)
class EndTts:
    reply_id: str


@dataclass(frozen=True, slots=True)
class CancelReply:
    """Stop the reply's LLM and TTS streams (barge-in, failure, hang-up)."""

    reply_id: str


@dataclass(frozen=True, slots=True)
class Play:
    utterance_id: str
    pcm: bytes


@dataclass(frozen=True, slots=True)
class EndUtterance:
    utterance_id: str


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    pass


@dataclass(frozen=True, slots=True)
class PausePlayback:
    """Caller speech began over the agent: stop sending, keep the queue (not yet a barge-in)."""


@dataclass(frozen=True, slots=True)
class ResumePlayback:
    """The speech was not a barge-in (a cough, an "mm-hm"): play on from where it paused."""


@dataclass(frozen=True, slots=True)
class Preempted:
    """A reply started before the turn was confirmed: ``outcome`` is confirmed, changed
    (the final transcript differs), resumed (the caller went on) or dropped (provider failure)."""

    outcome: str


@dataclass(frozen=True, slots=True)
class RunTool:
    """A tool with I/O (send_dtmf, HTTP tools): the driver runs it and reports the result."""

    reply_id: str
    call: ToolCall


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str


@dataclass(frozen=True, slots=True)
class Record:
    """A transcript line (turn, interruption, tool call, ...)."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TurnDone:
    """Latency marks of one turn, once its first audio went out."""

    marks: TurnMarks


@dataclass(frozen=True, slots=True)
class BargeIn:
    heard_ms: int


Action = (
    SttAudio | SttFinalize | UseProvider | ProviderFailed | StartLlm | StartTts | TtsText | EndTts
    | CancelReply | Play | EndUtterance | ClearPlayback | RunTool | Transfer | Hangup | Record
    | TurnDone | BargeIn | PausePlayback | ResumePlayback | Preempted
)
