"""The prompt agent: plays an audio file, listens for a while, then hangs up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from bridge.audio.wavfile import WavError, read_wav_8k_mono
from bridge.leg import AudioLeg, DtmfDigit, LegEnded, LegEvent, PlaybackDone

log = logging.getLogger(__name__)

UTTERANCE_ID = "prompt"
_CACHE_SIZE = 8
_cache: dict[tuple[str, float, int], bytes] = {}


def _cache_key(path: Path) -> tuple[str, float, int]:
    # One stat() call: cheap enough for the event loop; the decode is what goes to a thread.
    try:
        st = path.stat()
    except OSError as exc:
        raise WavError(f"{path}: {exc.strerror or exc}") from exc
    return (str(path.resolve()), st.st_mtime, st.st_size)


async def load_prompt(wav_path: str | Path) -> bytes:
    """The file as 8 kHz mono PCM, decoded off the event loop once per (path, mtime, size)."""
    path = Path(wav_path)
    key = _cache_key(path)
    pcm = _cache.get(key)
    if pcm is None:
        pcm = await asyncio.to_thread(read_wav_8k_mono, path)
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[key] = pcm
    return pcm


async def run_prompt(leg: AudioLeg, wav_path: str, listen_s: float, hang_up: bool = True) -> None:
    """Play ``wav_path`` to the caller, listen ``listen_s`` seconds, then hang up (unless
    ``hang_up`` is False). Returns early when the call ends. An unreadable file is logged and
    the call is ended at once rather than leaving the caller in silence."""
    try:
        pcm = await load_prompt(wav_path)
    except WavError as exc:
        log.error("prompt agent: %s", exc, extra={"call_id": leg.call_id})
        if hang_up:
            await leg.hangup("error")
        return
    events = leg.events()
    leg.play(UTTERANCE_ID, pcm)
    leg.end_utterance(UTTERANCE_ID)
    if not await _until_played(events):
        return
    if not await _listen(events, listen_s, leg.call_id):
        return
    if hang_up:
        await leg.hangup("agent-finished")


async def _until_played(events: AsyncIterator[LegEvent]) -> bool:
    """Read events until the prompt has been played (True) or the call ended (False)."""
    async for event in events:
        if isinstance(event, PlaybackDone) and event.utterance_id == UTTERANCE_ID:
            return True
        if isinstance(event, LegEnded):
            return False
    return False


async def _listen(events: AsyncIterator[LegEvent], listen_s: float, call_id: str) -> bool:
    """Read and discard caller audio for ``listen_s`` seconds; False if the call ended first."""
    try:
        async with asyncio.timeout(listen_s):
            async for event in events:
                if isinstance(event, LegEnded):
                    return False
                if isinstance(event, DtmfDigit):
                    log.info("prompt agent: caller pressed %s", event.digit, extra={"call_id": call_id})
    except TimeoutError:
        return True
    return False
