"""Per-call recording: a stereo 8 kHz WAV, left = caller, right = agent.

Both channels are written on the same media clock tick (what the leg delivered from the
caller and what it sent to the caller during that 20 ms), so they stay time-aligned by
construction; a side with nothing on a tick gets silence.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import wave
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


SUBJECT_SUFFIX = ".subject"


def subject_sidecar(wav: Path) -> Path:
    """``<name>.subject`` beside ``<name>.wav``: the person's pseudonymous id (what `forget`
    and retention look for)."""
    return wav.with_suffix(SUBJECT_SUFFIX)


def write_subject(wav: Path, subject: str) -> None:
    if subject:
        sidecar = subject_sidecar(wav)
        sidecar.write_text(subject + "\n", encoding="ascii")
        sidecar.chmod(0o600)


def recording_path(directory: str | Path, call_id: str, now: dt.datetime | None = None) -> Path:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    safe = _UNSAFE.sub("_", call_id)[:80] or "call"
    return Path(directory) / f"{stamp}-{safe}.wav"


class CallRecorder:
    def __init__(self, path: Path, frame_samples: int = 160, rate: int = 8000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._silence = bytes(frame_samples * 2)
        self._buf = np.zeros(frame_samples * 2, dtype="<i2")
        self._wav: wave.Wave_write | None = wave.open(str(path), "wb")
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self.frames = 0

    def write(self, caller: bytes | None, agent: bytes | None) -> None:
        if self._wav is None:
            return
        buf = self._buf
        buf[0::2] = np.frombuffer(caller or self._silence, dtype="<i2")
        buf[1::2] = np.frombuffer(agent or self._silence, dtype="<i2")
        try:
            self._wav.writeframesraw(buf.tobytes())
        except OSError as exc:
            log.error("recording %s stopped: %s", self.path, exc)
            self.close()
            return
        self.frames += 1

    def close(self) -> None:
        wav, self._wav = self._wav, None
        if wav is not None:
            try:
                wav.close()  # patches the header with the final length
            except OSError as exc:
                log.error("recording %s not finalised: %s", self.path, exc)
