"""The conversation agent is ready before the first call: its STT decoders are loaded at start.

Before, the first call loaded its pocketsphinx decoder itself (3-4 s on a busy 2-core box), so
its first question outlived the STT-final timeout and was dropped."""

from __future__ import annotations

import shutil

import pytest

from bridge.daemon.agents import prepare_conversation
from bridge.settings import Secrets, Settings

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


async def test_offline_decoders_are_loaded_before_the_first_call() -> None:
    settings = Settings.model_validate({"stt": {"pocketsphinx_idle_decoders": 1}})
    providers, fallback = await prepare_conversation(settings, Secrets())
    stt = providers.stt[0]
    try:
        assert fallback
        assert stt._pool.idle_count == 1  # type: ignore[attr-defined]
        stream = await stt.open()
        try:
            assert stream._worker.ready  # type: ignore[attr-defined]  # no load on the call's path
        finally:
            await stream.close()
    finally:
        await stt.aclose()  # type: ignore[attr-defined]
