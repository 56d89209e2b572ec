"""libespeak-ng in-process through ctypes (the copy bundled by espeakng-loader, with its data).

espeak-ng keeps all of its state in C globals and is not thread-safe, so the process has one
engine and every call into it runs on one dedicated worker thread (``EXECUTOR``); the lock
also guards direct callers of the blocking methods. A sentence takes a few milliseconds to
synthesise (RTF ~0.002), too long for the event loop but far faster than real time.

Synthesis is synchronous with a callback (AUDIO_OUTPUT_SYNCHRONOUS): espeak hands over audio
in ~60 ms blocks while it works, so the first block of a clause is out in ~0.1 ms.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import espeakng_loader

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_BUFFER_MS = 60  # audio block handed to the callback
_EE_OK = 0
_RAND_SEED = 1

# int callback(short *wav, int numsamples, espeak_EVENT *events); return 1 to abort
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# Every call into libespeak-ng goes through this one thread.
EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")

AudioSink = Callable[[bytes], bool]
"""Receives each block of s16le PCM at the engine's rate; returns False to abort synthesis."""


class EspeakError(RuntimeError):
    """libespeak-ng could not start, or rejected a voice or parameter."""


class EspeakEngine:
    """The process's libespeak-ng. Get it with ``EspeakEngine.instance()``."""

    _instance: EspeakEngine | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            _BUFFER_MS,
            espeakng_loader.get_data_path().encode(),
            _INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        self._lib = lib
        self.sample_rate: int = rate
        self._sink: AudioSink | None = None
        self._aborted = False
        self._sink_error: Exception | None = None
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def instance(cls) -> EspeakEngine:
        """The process-wide engine, started on first use (~5 ms)."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], numsamples: int, _events: int) -> int:
        sink = self._sink
        if sink is None or self._aborted:
            return 1
        if numsamples <= 0 or not wav:
            return 0
        try:
            keep_going = sink(ctypes.string_at(wav, numsamples * 2))
        except Exception as exc:  # must not unwind through C: stop this synthesis, re-raise after
            self._sink_error = exc
            keep_going = False
        if not keep_going:
            self._aborted = True
            return 1
        return 0

    def _configure(self, voice: str, rate_wpm: int) -> None:
        # Set the voice before every synthesis, even an unchanged one: it resets most of the
        # klatt generator's state (~0.2 ms). Not all of it: the pitch flutter runs on a static
        # frame counter that no API resets (period 20 frames), so the same text comes out in
        # up to 20 slightly different versions depending on what this process spoke before.
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise EspeakError(f"unknown espeak-ng voice {voice!r}")
        if self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0) != _EE_OK:
            raise EspeakError(f"espeak-ng rejected rate {rate_wpm} wpm")
        # klatt voices also mix in noise: a fixed seed keeps that part repeatable
        self._lib.espeak_ng_SetRandSeed(_RAND_SEED)

    def check_voice(self, voice: str, rate_wpm: int) -> None:
        """Raise EspeakError now if the voice or rate is unusable (blocking; call at start-up)."""
        with self._lock:
            self._configure(voice, rate_wpm)

    def synthesize(self, text: str, voice: str, rate_wpm: int, sink: AudioSink) -> bool:
        """Speak ``text`` into ``sink`` (blocking). False when the sink aborted it."""
        data = text.replace("\x00", " ").encode("utf-8", errors="replace")
        with self._lock:
            self._configure(voice, rate_wpm)
            self._sink, self._aborted, self._sink_error = sink, False, None
            try:
                err = self._lib.espeak_Synth(
                    data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
                aborted, sink_error = self._aborted, self._sink_error
            finally:
                self._sink, self._sink_error = None, None
        if sink_error is not None:
            raise sink_error
        if err != _EE_OK and not aborted:
            raise EspeakError(f"espeak_Synth failed ({err})")
        return not aborted
