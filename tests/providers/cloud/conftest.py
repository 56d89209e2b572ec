"""Fixtures: one FakeCloud per test on 127.0.0.1 (ephemeral port), and audio helpers."""

from __future__ import annotations

import asyncio
import socket
import traceback
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import numpy as np
import pytest

from bridge.providers.base import TTS, AudioChunk, ProviderError
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY

KEYS = (DEEPGRAM_KEY, OPENAI_KEY, ELEVENLABS_KEY)
_T = TypeVar("_T")


@pytest.fixture
async def cloud() -> AsyncIterator[FakeCloud]:
    async with FakeCloud() as fake:
        yield fake


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def socket_tts(cls: type[_T], url: str, **kw: object) -> _T:
    """An ElevenLabs socket provider (stream-input or multi-context) against the fake at
    ``url``: its key, voice1, a 2 s read backstop, no warm-up unless ``kw`` asks."""
    opts: dict[str, Any] = {
        "api_key": ELEVENLABS_KEY,
        "voice_id": "voice1",
        "url": url,
        "read_timeout_s": 2.0,
        "keep_warm": False,
    }
    opts.update(kw)
    return cls(**opts)


async def synth(tts: TTS, text: AsyncIterator[str]) -> list[AudioChunk]:
    """Everything ``tts`` says for ``text`` (bounded: 10 s)."""
    async with asyncio.timeout(10):
        return [c async for c in tts.synthesize(text)]


def speech(ms: int, hz: float = 300.0) -> bytes:
    t = np.arange(ms * 8) / 8000
    return (6000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(ms * 16)


async def clauses(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


def assert_clean(exc: BaseException) -> None:
    """A ProviderError that neither says nor chains anything holding an API key."""
    assert isinstance(exc, ProviderError)
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    for key in KEYS:
        assert key not in text
    assert exc.__cause__ is None
