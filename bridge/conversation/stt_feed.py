"""Caller audio on its way to the STT, sent in chunks rather than one message per 20 ms frame.

Each WebSocket message costs the bridge a send (frame header, transport write, the session's
lock and replay buffer) whatever its size: at 100-150 calls sending every frame was about a
sixth of the event loop (bench/profiles). Deepgram recommends larger chunks anyway: Flux "80ms
audio chunks strongly recommended for optimal model performance and latency" (Flux
quickstart); any size is accepted on both endpoints. So audio is held while the caller speaks
until ``stt.send_chunk_ms`` of it is waiting, and released at once (whatever is held) when the
moment matters: on every frame the VAD calls silence (the end of speech, and the silence after
it on which an STT like Flux times its end of turn), when a Finalize / ForceEndTurn goes out
(it must come after the audio it finalizes), or when the caller cuts in on the agent. Nothing
is held longer than a chunk, and no end of speech waits for a chunk to fill.

Sans-I/O: the driver puts frames and finalize marks in, ``take()`` gives what may go now.
"""

from __future__ import annotations

from collections import deque

from bridge.audio.g711 import UlawPcm
from bridge.leg import FRAME_BYTES, FRAME_MS

FINALIZE = object()  # a Finalize / ForceEndTurn, in order with the audio around it


class SttFeed:
    """Frames and finalize marks in order; releases them in chunks of ``chunk_ms``."""

    def __init__(self, chunk_ms: int) -> None:
        # at least one frame: 20 (or less) means every frame goes as it comes
        self.chunk_bytes = max(1, chunk_ms // FRAME_MS) * FRAME_BYTES
        self._items: deque[object] = deque()  # frames (bytes) and FINALIZE marks
        self._held = 0  # audio bytes put since the last release
        self.ready = False  # something may go now

    def audio(self, pcm: bytes) -> bool:
        """Queue a frame; True when the held audio now fills a chunk (it may go)."""
        self._items.append(pcm)
        self._held += len(pcm)
        if self._held >= self.chunk_bytes:
            self._release()
        return self.ready

    def finalize(self) -> bool:
        """Queue a finalize mark: it and all the audio before it may go now."""
        self._items.append(FINALIZE)
        self._release()
        return True

    def flush(self) -> bool:
        """Whatever is held may go now (end of speech, a cut-in); True if anything is."""
        if self._items:
            self._release()
        return self.ready

    def take(self) -> list[tuple[bytes, bool]]:
        """What may go, in order: (audio, then finalize?) pairs; audio may be empty."""
        if not self.ready:
            return []
        self.ready = False
        self._held = 0
        out: list[tuple[bytes, bool]] = []
        frames: list[bytes] = []
        items = self._items
        while items:
            item = items.popleft()
            if item is FINALIZE:
                out.append((join_frames(frames), True))
                frames = []
            else:
                assert isinstance(item, bytes)
                frames.append(item)
        if frames:
            out.append((join_frames(frames), False))
        return out

    def __len__(self) -> int:
        return len(self._items)

    def _release(self) -> None:
        self.ready = True


def join_frames(frames: list[bytes]) -> bytes:
    """The frames as one buffer. Frames that all kept the caller's mu-law (a Plivo stream,
    g711.UlawPcm) stay so, joined, so the STT still sends those bytes instead of encoding the
    PCM again; a plain join would drop it."""
    if not frames:
        return b""
    if len(frames) == 1:
        return frames[0]
    pcm = b"".join(frames)
    if all(type(f) is UlawPcm for f in frames):
        ulaw = b"".join(f.ulaw for f in frames)  # type: ignore[attr-defined]
        if len(ulaw) * 2 == len(pcm):
            kept = UlawPcm(pcm)
            kept.ulaw = ulaw
            return kept
    return pcm
