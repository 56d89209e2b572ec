"""Offline STT: pocketsphinx, streamed, one decoder process per open stream.

``send()`` writes 8 kHz PCM to the stream's decoder process (a pipe write, ~10 us on the
loop); the process upsamples to 16 kHz, decodes incrementally and reports the hypothesis as
an interim ``Transcript`` whenever it changes. ``finalize()`` ends the utterance: a
``Transcript(is_final=True, end_of_utterance=True)`` with the text since the previous final
follows in a few milliseconds (always, "" when nothing was recognised). Utterances longer
than ``pocketsphinx_max_utterance_s`` are cut with ``is_final=True, end_of_utterance=False``.
Each final carries only its own segment's text (as Deepgram's is_final results do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from bridge.providers.base import ProviderError, Transcript
from bridge.providers.stt import pocketsphinx_protocol as proto
from bridge.providers.stt.pocketsphinx_pool import PROVIDER, DecoderPool, DecoderProcess
from bridge.providers.stt.pocketsphinx_session import GrammarError, corpus_sentences, parse_grammar
from bridge.settings import Secrets, Settings
from bridge.settings.paths import resolve_path

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 2.0


class _End:
    def __init__(self, error: ProviderError | None = None) -> None:
        self.error = error


class PocketsphinxStream:
    def __init__(self, worker: DecoderProcess, pool: DecoderPool) -> None:
        self._worker = worker
        self._pool = pool
        self._queue: asyncio.Queue[Transcript | _End] = asyncio.Queue()
        self._closing = False
        self._failed: ProviderError | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def send(self, pcm: bytes) -> None:
        self._check_usable()
        for start in range(0, len(pcm), proto.MAX_PAYLOAD):
            self._worker.write(proto.AUDIO, pcm[start : start + proto.MAX_PAYLOAD])
        await self._worker.drain_if_needed()

    async def finalize(self) -> None:
        self._check_usable()
        self._worker.write(proto.FINALIZE)

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # later readers end too
                if item.error is not None:
                    raise item.error
                return
            yield item

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        reusable = False
        if self._failed is None and not self._reader.done():
            try:
                self._worker.write(proto.RESET)
                # the reader returns at the READY that answers RESET
                await asyncio.wait_for(asyncio.shield(self._reader), _CLOSE_TIMEOUT_S)
                reusable = self._failed is None
            except (ProviderError, TimeoutError):
                reusable = False
        if not reusable:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._worker.kill()
        self._queue.put_nowait(_End())
        await self._pool.give_back(self._worker)

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing:
            raise ProviderError(PROVIDER, "stream is closed", retryable=False)

    async def _read_loop(self) -> None:
        while True:
            msg = await self._worker.read()
            if msg is None:
                self._fail(ProviderError(PROVIDER, "decoder process exited"))
                return
            if msg.kind == proto.READY:
                self._worker.ready = True
                if self._closing:
                    return
            elif msg.kind == proto.ERROR:
                self._fail(ProviderError(PROVIDER, msg.payload.decode(errors="replace"), retryable=False))
                self._worker.kill()
                return
            elif self._closing:
                continue  # results that raced with close(): nobody wants them
            elif msg.kind == proto.INTERIM:
                self._queue.put_nowait(Transcript(msg.payload.decode(errors="replace"), is_final=False))
            elif msg.kind == proto.FINAL:
                text, end = proto.decode_final(msg.payload)
                self._queue.put_nowait(Transcript(text, is_final=True, end_of_utterance=end))

    def _fail(self, error: ProviderError) -> None:
        self._failed = error
        if not self._closing:
            log.error("pocketsphinx stream failed: %s", error)
            self._queue.put_nowait(_End(error))


class PocketsphinxSTT:
    name = PROVIDER

    def __init__(
        self, grammar: str = "", max_utterance_s: float = 30.0, idle_decoders: int = 2, corpus: str = ""
    ) -> None:
        # raise GrammarError now rather than on the first call
        if parse_grammar(grammar) is not None and corpus:
            raise GrammarError("set pocketsphinx_grammar or pocketsphinx_corpus, not both")
        if corpus:
            corpus_sentences(corpus)
            corpus = str(Path(corpus).resolve())  # the worker may run elsewhere
        args = ["--grammar", grammar, "--max-utterance-s", str(max_utterance_s), "--corpus", corpus]
        self._pool = DecoderPool(args, keep_idle=idle_decoders)

    async def open(self) -> PocketsphinxStream:
        return PocketsphinxStream(await self._pool.take(), self._pool)

    async def prewarm(self) -> None:
        """Load the idle decoders now (optional, at daemon start) so the first call has one."""
        await self._pool.prewarm()

    async def aclose(self) -> None:
        """Stop the idle decoder processes (those of open streams stop when the streams close)."""
        await self._pool.aclose()


def create(settings: Settings, secrets: Secrets) -> PocketsphinxSTT:
    del secrets  # no keys
    stt = settings.stt
    try:
        return PocketsphinxSTT(
            stt.pocketsphinx_grammar,
            stt.pocketsphinx_max_utterance_s,
            stt.pocketsphinx_idle_decoders,
            str(resolve_path(stt.pocketsphinx_corpus)) if stt.pocketsphinx_corpus else "",
        )
    except GrammarError as exc:
        raise ProviderError(PROVIDER, str(exc), retryable=False) from exc
