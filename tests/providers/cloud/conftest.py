"""Fixtures: one FakeCloud per test on 127.0.0.1 (ephemeral port), and audio helpers."""

from __future__ import annotations

import socket
import traceback
from collections.abc import AsyncIterator

import numpy as np
import pytest

from bridge.providers.base import ProviderError
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY

KEYS = (DEEPGRAM_KEY, OPENAI_KEY, ELEVENLABS_KEY)


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
