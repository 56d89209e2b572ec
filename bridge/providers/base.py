"""The provider seams: STT, LLM and TTS, each one small interface (DESIGN.md, Seams).

Cloud and offline implementations live beside this module; the engine sees only these types.
Audio between engine and providers is s16le PCM unless a chunk says otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# The engine owns the first-token, first-byte and stall timeouts (DESIGN.md, Turn contract); a
# provider keeps only a loose backstop (a socket read timeout) well past them, which ends a
# wait nobody else is timing and never beats the engine's deadline: one label per failure.
BACKSTOP_FACTOR = 4.0
BACKSTOP_MIN_S = 10.0


def backstop_s(*limits: float) -> float:
    """A provider's read timeout for waits the engine times with ``limits``."""
    return max(BACKSTOP_MIN_S, BACKSTOP_FACTOR * max(limits, default=0.0))


class ProviderError(Exception):
    """A provider failed (connect, auth, rate limit, stall, protocol). The engine fails over."""

    def __init__(self, provider: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable


# ---- STT -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool
    # speech_final / from_finalize: the provider thinks the utterance is complete
    end_of_utterance: bool = False
    confidence: float = 0.0
    # turn-taking hints from STTs that detect turns (Deepgram Flux), on non-final transcripts:
    # EAGER_END_OF_TURN (probably done: a reply may be prepared speculatively) and
    # TURN_RESUMED (the caller went on: drop that speculative reply). "" otherwise.
    event: str = ""


EAGER_END_OF_TURN = "eager_end_of_turn"
TURN_RESUMED = "turn_resumed"


class SttStream(Protocol):
    async def send(self, pcm: bytes) -> None:
        """Push 8 kHz s16le caller audio (any whole number of samples)."""
        ...

    async def finalize(self) -> None:
        """Ask for a final transcript of everything sent so far (end of turn). Exactly one
        end_of_utterance transcript follows each call, even where the service does not
        promise a reply (Deepgram answers Finalize only when audio is pending)."""
        ...

    def transcripts(self) -> AsyncIterator[Transcript]: ...

    async def close(self) -> None: ...


class STT(Protocol):
    name: str

    async def open(self) -> SttStream: ...


# ---- LLM -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_call_id: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


LlmEvent = TextDelta | ToolCall


class LLM(Protocol):
    name: str

    def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LlmEvent]:
        """Stream text deltas and (complete) tool calls for the conversation so far."""
        ...


# ---- TTS -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Audio as the service sent it (any chunking): the conversation's ChunkConverter decodes
    and resamples it to the call's 8 kHz s16le. ``sample_rate`` is the PCM's or the MP3's."""

    data: bytes
    encoding: Literal["pcm_s16le", "ulaw", "alaw", "mp3"] = "pcm_s16le"
    sample_rate: int = 8000


class TTS(Protocol):
    name: str

    def synthesize(self, text: AsyncIterator[str]) -> AsyncIterator[AudioChunk]:
        """Turn a stream of text chunks (clauses) into a stream of audio chunks."""
        ...

    async def aclose(self) -> None: ...
