"""ElevenLabs output formats: which are supported, and how their bytes are declared.

The provider yields the bytes as the service sends them, declared on each AudioChunk
(``ulaw_8000`` -> ulaw, ``pcm_<rate>`` -> s16le at that rate, ``mp3_<rate>_<kbps>`` -> mp3);
the conversation's ChunkConverter decodes and resamples (DESIGN.md, Adding a provider).
"""

from __future__ import annotations

from typing import Literal

from bridge.providers.base import AudioChunk

TELEPHONY_RATE = 8000
PCM_RATES = {8000, 16000, 22050, 24000, 44100, 48000}
MP3_RATES = {22050, 44100}

Encoding = Literal["pcm_s16le", "ulaw", "alaw", "mp3"]
_ENCODINGS: dict[str, Encoding] = {"ulaw": "ulaw", "alaw": "alaw", "pcm": "pcm_s16le", "mp3": "mp3"}


def check_output_format(fmt: str) -> tuple[str, int]:
    """(codec, rate) of a supported format; ValueError naming the supported ones otherwise."""
    parts = fmt.split("_")
    codec = parts[0]
    rate = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    ok = (
        (codec in {"ulaw", "alaw"} and rate == TELEPHONY_RATE and len(parts) == 2)
        or (codec == "pcm" and rate in PCM_RATES and len(parts) == 2)
        or (codec == "mp3" and rate in MP3_RATES and len(parts) == 3)
    )
    if not ok:
        raise ValueError(
            f"unsupported ElevenLabs output_format {fmt!r}: use ulaw_8000 or alaw_8000 (no transcoding), "
            "pcm_8000..pcm_48000 or mp3_<22050|44100>_<kbps>"
        )
    return codec, rate


class NativeAudio:
    """Wraps the service's bytes of one output format as AudioChunks, unchanged."""

    def __init__(self, output_format: str) -> None:
        codec, self.rate = check_output_format(output_format)
        self.encoding = _ENCODINGS[codec]

    def chunk(self, data: bytes) -> AudioChunk | None:
        return AudioChunk(data, self.encoding, self.rate) if data else None
