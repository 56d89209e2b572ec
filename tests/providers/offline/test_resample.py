"""The streaming resampler: chunked output equals one-pass output, no clicks, no held-back audio."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio.resample import StreamResampler, resample_all

RATE_PAIRS = [(8000, 16000), (22050, 8000), (24000, 8000), (16000, 8000), (44100, 8000)]


def sweep(rate: int, seconds: float, f0: float, f1: float, amplitude: float = 12000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (np.sin(phase) * amplitude).astype("<i2").tobytes()


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float64)


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    n = min(len(reference), len(other))
    err = reference[:n] - other[:n]
    return float(10 * np.log10(np.sum(reference[:n] ** 2) / max(np.sum(err**2), 1e-9)))


def push_in_chunks(r: StreamResampler, data: bytes, sizes: list[int]) -> bytes:
    out, i, k = [], 0, 0
    while i < len(data):
        size = sizes[k % len(sizes)]
        out.append(r.push(data[i : i + size]))
        i, k = i + size, k + 1
    out.append(r.flush())
    return b"".join(out)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_chunked_equals_one_pass(in_rate: int, out_rate: int) -> None:
    # a sweep across the whole passband, cut at irregular places (odd byte counts too)
    signal = sweep(in_rate, 1.0, 100, 0.45 * min(in_rate, out_rate))
    whole = pcm(resample_all(signal, in_rate, out_rate))
    rng = np.random.default_rng(7)
    sizes = [int(s) for s in rng.integers(1, 900, size=200)]
    chunked = pcm(push_in_chunks(StreamResampler(in_rate, out_rate), signal, sizes))
    assert abs(len(chunked) - len(whole)) <= 1
    assert snr_db(whole, chunked) > 60
    # and the output is really the signal (not silence, not a shifted copy)
    assert np.sqrt(np.mean(whole**2)) > 5000


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_output_length_ratio(in_rate: int, out_rate: int) -> None:
    signal = sweep(in_rate, 2.0, 200, 1000)
    out = resample_all(signal, in_rate, out_rate)
    expected = 2.0 * out_rate
    assert abs(len(out) // 2 - expected) <= 2


def test_many_tiny_chunks_stay_continuous() -> None:
    # one sample (and half samples) at a time: no clicks means the sample-to-sample step
    # never exceeds what the sine itself can do
    signal = sweep(8000, 0.5, 300, 3000)
    r = StreamResampler(8000, 16000)
    out = pcm(push_in_chunks(r, signal, [1, 2, 3, 1, 2]))
    whole = pcm(resample_all(signal, 8000, 16000))
    assert snr_db(whole, out) > 60
    max_step = 12000 * 2 * np.pi * 3000 / 16000 * 1.2  # slope of the fastest part, plus margin
    assert np.max(np.abs(np.diff(out[32:-32]))) < max_step


def test_stateless_chunking_would_click() -> None:
    # the reason this module exists: resampling 20 ms chunks independently is far worse
    signal = sweep(8000, 1.0, 300, 3000)
    whole = pcm(resample_all(signal, 8000, 16000))
    pieces = [resample_all(signal[i : i + 320], 8000, 16000) for i in range(0, len(signal), 320)]
    assert snr_db(whole, pcm(b"".join(pieces))) < 45


def test_no_chunk_is_held_back() -> None:
    # a 20 ms frame in gives (nearly) a 20 ms frame out at once: only the filter's few
    # samples of look-ahead wait for the next push
    tone = sweep(8000, 0.2, 440, 440)
    r = StreamResampler(8000, 16000)
    first = r.push(tone[:320])
    assert len(first) // 2 >= 320 - 40
    r2 = StreamResampler(22050, 8000)
    tone22 = sweep(22050, 0.1, 440, 440)
    out = r2.push(tone22[: 1323 * 2])  # 60 ms, espeak's block
    assert len(out) // 2 >= 480 - 24


def test_tone_keeps_its_frequency_and_aliases_are_removed() -> None:
    t = np.arange(22050) / 22050
    tone = (np.sin(2 * np.pi * 1000 * t) * 10000).astype("<i2").tobytes()
    out = pcm(resample_all(tone, 22050, 8000))
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / 8000)
    assert abs(freqs[np.argmax(spectrum)] - 1000) < 5
    # a 6 kHz tone cannot exist at 8 kHz: it must be filtered, not folded to 2 kHz
    above = (np.sin(2 * np.pi * 6000 * t) * 10000).astype("<i2").tobytes()
    folded = pcm(resample_all(above, 22050, 8000))
    assert np.sqrt(np.mean(folded[100:-100] ** 2)) < 10000 / np.sqrt(2) / 1000  # > 60 dB down


def test_flush_resets_for_a_new_stream() -> None:
    signal = sweep(8000, 0.3, 300, 2000)
    r = StreamResampler(8000, 16000)
    first = r.push(signal) + r.flush()
    second = r.push(signal) + r.flush()
    assert first == second


def test_reset_drops_state_and_carry() -> None:
    r = StreamResampler(8000, 16000)
    r.push(b"\x01\x02\x03")  # one and a half samples
    r.reset()
    signal = sweep(8000, 0.1, 300, 2000)
    assert r.push(signal) + r.flush() == resample_all(signal, 8000, 16000)


def test_same_rate_passes_through_and_bad_rates_fail() -> None:
    r = StreamResampler(8000, 8000)
    assert r.push(b"\x01\x02\x03") == b"\x01\x02"
    assert r.push(b"\x04") == b"\x03\x04"
    assert r.flush() == b""
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 8000)


def test_empty_push_is_harmless() -> None:
    r = StreamResampler(8000, 16000)
    assert r.push(b"") == b""
    assert r.push(b"\x00") == b""
    assert r.flush() == b""
