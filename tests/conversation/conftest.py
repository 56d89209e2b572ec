"""Caller speech for the conversation tests, made once per session with espeak-ng + sox."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.audio import have_speech_tools, read_wav_pcm, speech_wav


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if not have_speech_tools():
        pytest.skip("espeak-ng and sox are needed to make caller speech")
    folder: Path = tmp_path_factory.mktemp("speech")
    lines = {
        "open": "When are you open on Saturday?",
        "wait": "Wait, what about Sunday?",
        "voice": "This is the agent talking about our opening hours and the parking behind the building.",
    }
    return {key: read_wav_pcm(speech_wav(text, folder / f"{key}.wav")) for key, text in lines.items()}
