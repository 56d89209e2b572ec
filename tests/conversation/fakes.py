"""Small in-test providers implementing bridge/providers/base.py, for driver tests that must
run under a manual clock (the real offline engines have their own end-to-end test)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np

from bridge.providers.base import (
    AudioChunk,
    LlmEvent,
    Message,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
    Transcript,
)

MS_PER_CHAR = 60


class FakeSttStream:
    def __init__(self, owner: FakeSTT) -> None:
        self.owner = owner
        self.queue: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self.audio = 0

    async def send(self, pcm: bytes) -> None:
        if self.owner.fail_on_send:
            raise ProviderError(self.owner.name, "socket closed")
        before = self.audio
        self.audio += len(pcm)
        if before < 3200 <= self.audio and self.owner.texts:  # an interim after 200 ms
            self.queue.put_nowait(Transcript(self.owner.texts[0].split()[0], is_final=False))

    async def finalize(self) -> None:
        self.owner.finalizes += 1
        text = self.owner.texts.popleft() if self.owner.texts and self.audio else ""
        self.audio = 0
        self.queue.put_nowait(Transcript(text, is_final=True, end_of_utterance=True))

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while (item := await self.queue.get()) is not None:
            yield item

    async def close(self) -> None:
        self.queue.put_nowait(None)


class FakeSTT:
    """Each finalize after some audio yields the next scripted text as the final."""

    def __init__(self, texts: Sequence[str], name: str = "fake-stt") -> None:
        self.name = name
        self.texts = deque(texts)
        self.finalizes = 0
        self.fail_on_send = False
        self.opened = 0

    async def open(self) -> FakeSttStream:
        self.opened += 1
        return FakeSttStream(self)


Rule = Callable[[Sequence[Message]], Sequence[str | ToolCall] | None]


class FakeLLM:
    """Replies come from ``rule(messages)``: text parts (streamed word by word) and tool calls."""

    def __init__(self, rule: Rule, name: str = "fake-llm", fail_after_words: int | None = None) -> None:
        self.name = name
        self.rule = rule
        self.fail_after_words = fail_after_words
        self.calls: list[tuple[Message, ...]] = []

    async def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LlmEvent]:
        self.calls.append(tuple(messages))
        parts = self.rule(messages) or []
        words = 0
        for part in parts:
            if isinstance(part, ToolCall):
                yield part
                continue
            for word in part.split(" "):
                if self.fail_after_words is not None and words >= self.fail_after_words:
                    raise ProviderError(self.name, "stream reset by peer")
                words += 1
                yield TextDelta(word + " ")
                await asyncio.sleep(0)


class FakeTTS:
    """A tone per clause, MS_PER_CHAR ms per character, in 100 ms chunks."""

    def __init__(self, name: str = "fake-tts", amplitude: int = 6000, voice: bytes = b"") -> None:
        self.name = name
        self.amplitude = amplitude
        self.voice = voice  # real speech to loop instead of a tone (echo tests need a voice)
        self.clauses: list[str] = []

    async def synthesize(self, text: AsyncIterator[str]) -> AsyncIterator[AudioChunk]:
        async for clause in text:
            self.clauses.append(clause)
            samples = len(clause) * MS_PER_CHAR * 8
            if self.voice:
                pcm = (self.voice * (samples * 2 // len(self.voice) + 1))[: samples * 2]
            else:
                t = np.arange(samples) / 8000
                pcm = (np.sin(2 * np.pi * 220 * t) * self.amplitude).astype("<i2").tobytes()
            for i in range(0, len(pcm), 1600):
                yield AudioChunk(pcm[i : i + 1600])
                await asyncio.sleep(0)

    async def aclose(self) -> None:
        return None


def last_user(messages: Sequence[Message]) -> str:
    users = [m.content for m in messages if m.role == "user"]
    return users[-1] if users and messages[-1].role == "user" else ""
