"""Offline TTS: espeak-ng in-process, streamed at its native rate.

Each text chunk (a clause, as the engine sends them) is synthesised on the espeak worker
thread as soon as it arrives; espeak's ~60 ms blocks (s16le at its 22.05 kHz, declared on
each chunk) are handed to the caller while the rest of the clause is still being made, and
the conversation's ChunkConverter resamples them to the call's 8 kHz. Closing the output
stream early (barge-in) aborts the synthesis in progress.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator

from bridge.providers.base import AudioChunk, ProviderError
from bridge.providers.tts.espeak_engine import EXECUTOR, EspeakEngine, EspeakError
from bridge.settings import Secrets, Settings


class _ClauseDone:
    """Sentinel: the worker finished (or failed) one clause."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class EspeakTTS:
    name = "espeak"

    def __init__(self, voice: str, rate_wpm: int, engine: EspeakEngine | None = None) -> None:
        self.voice = voice
        self.rate_wpm = rate_wpm
        self._engine = engine or EspeakEngine.instance()

    async def synthesize(self, text: AsyncIterator[str]) -> AsyncGenerator[AudioChunk, None]:
        rate = self._engine.sample_rate
        abort = threading.Event()
        try:
            async for clause in text:
                if not clause.strip():
                    continue
                queue = self._start(clause, abort)
                while not isinstance(item := await queue.get(), _ClauseDone):
                    yield AudioChunk(item, "pcm_s16le", rate)
                if item.error is not None:
                    raise ProviderError(self.name, f"synthesis failed: {item.error}", retryable=False)
        finally:
            abort.set()  # the consumer left early: espeak stops at its next block

    def _start(self, clause: str, abort: threading.Event) -> asyncio.Queue[bytes | _ClauseDone]:
        """Synthesise one clause on the espeak thread; its blocks arrive on the queue."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | _ClauseDone] = asyncio.Queue()

        def post(item: bytes | _ClauseDone) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                return False
            return True

        def sink(pcm: bytes) -> bool:
            if abort.is_set():
                return False
            return post(pcm) if pcm else True

        def work() -> None:
            try:
                self._engine.synthesize(clause, self.voice, self.rate_wpm, sink)
            except BaseException as exc:  # handed to the consumer, not lost in the thread
                post(_ClauseDone(exc))
            else:
                post(_ClauseDone())

        EXECUTOR.submit(work)
        return queue

    async def aclose(self) -> None:
        """Nothing per instance: the engine is process-wide and stays loaded."""


def create(settings: Settings, secrets: Secrets) -> EspeakTTS:
    del secrets  # no keys
    tts = EspeakTTS(settings.tts.espeak_voice, settings.tts.espeak_rate_wpm)
    try:  # fail at start-up, not on the first call, if the voice is wrong
        EXECUTOR.submit(tts._engine.check_voice, tts.voice, tts.rate_wpm).result()
    except EspeakError as exc:
        raise ProviderError("espeak", str(exc), retryable=False) from exc
    return tts
