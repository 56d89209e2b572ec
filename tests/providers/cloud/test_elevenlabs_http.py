"""ElevenLabs HTTP stream: the real elevenlabs SDK against the fake server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from bridge.providers.base import AudioChunk, ProviderError
from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS
from devkit.fakes import FakeCloud
from devkit.fakes.server import ELEVENLABS_KEY
from devkit.fakes.tone import ToneSource

from .conftest import assert_clean, clauses


def make(url: str, **kw: object) -> ElevenLabsHttpTTS:
    opts: dict[str, object] = {
        "api_key": ELEVENLABS_KEY,
        "voice_id": "voice1",
        "url": url,
        "read_timeout_s": 2.0,
    }
    opts.update(kw)
    return ElevenLabsHttpTTS(**opts)  # type: ignore[arg-type]


async def synth(tts: ElevenLabsHttpTTS, *text: str) -> list[AudioChunk]:
    async with asyncio.timeout(10):
        return [c async for c in tts.synthesize(clauses(*text))]


async def test_ulaw_8000_passes_through_untouched(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url)
    chunks = await synth(tts, "Hello there.", "", "How are you?")
    await tts.aclose()
    assert {(c.encoding, c.sample_rate) for c in chunks} == {("ulaw", 8000)}
    expected = [
        ToneSource("ulaw_8000").encode(t) for t in ("Hello there.", "How are you?")
    ]  # one per request
    assert b"".join(c.data for c in chunks) == b"".join(expected)
    reqs = cloud.elevenlabs.journal.of("request")
    assert [r.data["text"] for r in reqs] == ["Hello there.", "How are you?"]  # empty clause skipped
    assert reqs[0].data["output_format"] == "ulaw_8000" and reqs[0].data["model_id"] == "eleven_flash_v2_5"
    assert len(chunks) > 2  # streamed in pieces, not one blob per clause


async def test_warmup_connection_is_reused_by_the_turn(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url)
    await tts.warmup()
    await synth(tts, "One.")
    await synth(tts, "Two.")
    await tts.aclose()
    ports = {e.data["peer"] for e in cloud.elevenlabs.journal.events if e.kind in ("warmup", "request")}
    assert len(ports) == 1  # one TCP (in production: TLS) connection for warm-up and both turns


async def test_cancel_mid_stream_closes_the_response(cloud: FakeCloud) -> None:
    cloud.elevenlabs.faults.chunk_delay_s = 0.02
    tts = make(cloud.http_url)
    async with contextlib.aclosing(
        tts.synthesize(clauses("A long sentence that takes a while to say."))
    ) as out:
        await anext(out)
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("aborted") == 1)
    assert cloud.elevenlabs.journal.count("completed") == 0
    await tts.aclose()


async def test_bad_key(cloud: FakeCloud, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tts = make(cloud.http_url, api_key="el-wrong-key-should-not-leak")
    with pytest.raises(ProviderError) as info:
        await synth(tts, "Hi.")
    assert not info.value.retryable and "ELEVENLABS_API_KEY" in str(info.value)
    assert_clean(info.value)
    assert "el-wrong-key-should-not-leak" not in caplog.text
    with pytest.raises(ProviderError):
        await tts.warmup()
    await tts.aclose()


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_service_errors_are_retryable(cloud: FakeCloud, status: int) -> None:
    cloud.elevenlabs.faults.status = status
    tts = make(cloud.http_url)
    with pytest.raises(ProviderError) as info:
        await synth(tts, "Hi.")
    assert info.value.retryable and str(status) in str(info.value)
    assert cloud.elevenlabs.journal.count("rejected") == 1  # no hidden SDK retries
    await tts.aclose()


async def test_connection_refused(refused_url: str) -> None:
    tts = make(refused_url)
    with pytest.raises(ProviderError) as info:
        await synth(tts, "Hi.")
    assert info.value.retryable
    assert_clean(info.value)
    await tts.aclose()


async def test_no_first_byte_ends_at_the_read_backstop(cloud: FakeCloud) -> None:
    cloud.elevenlabs.faults.first_byte_delay_s = 5.0
    tts = make(cloud.http_url, read_timeout_s=0.3)
    with pytest.raises(ProviderError, match="read timeout"):
        await synth(tts, "Hi.")
    # the fake sees the closed connection when its delayed first write fails (after 5 s)
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("aborted") == 1, limit_s=15.0)
    await tts.aclose()


async def test_stall_after_first_audio_ends_at_the_read_backstop(cloud: FakeCloud) -> None:
    cloud.elevenlabs.faults.stall_after = 2
    tts = make(cloud.http_url, read_timeout_s=0.3)
    got: list[AudioChunk] = []
    with pytest.raises(ProviderError, match="read timeout"):
        async for c in tts.synthesize(clauses("A sentence long enough for several chunks.")):
            got.append(c)
    assert got  # the audio before the stall was delivered
    await tts.aclose()


async def test_dropped_connection_mid_stream(cloud: FakeCloud) -> None:
    cloud.elevenlabs.faults.drop_after = 2
    tts = make(cloud.http_url)
    with pytest.raises(ProviderError) as info:
        await synth(tts, "A sentence long enough for several chunks.")
    assert info.value.retryable
    await tts.aclose()


def test_unsupported_output_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ulaw_8000"):
        make("http://127.0.0.1:9", output_format="opus_48000_64")
