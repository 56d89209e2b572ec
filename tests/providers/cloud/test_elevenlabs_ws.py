"""ElevenLabs stream-input WebSocket: the bridge's client against the fake server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from bridge.conversation.convert import ChunkConverter
from bridge.providers.base import AudioChunk, ProviderError
from bridge.providers.tts.elevenlabs_ws import ElevenLabsWsTTS
from devkit.fakes import FakeCloud
from devkit.fakes.tone import ToneSource

from .conftest import assert_clean, clauses, socket_tts, synth


def make(url: str, **kw: object) -> ElevenLabsWsTTS:
    return socket_tts(ElevenLabsWsTTS, url, **kw)


async def test_speaks_while_the_text_is_still_being_written(cloud: FakeCloud) -> None:
    """The second clause is only released after audio of the first one came back."""
    tts = make(cloud.http_url)
    first_audio = asyncio.Event()

    async def llm() -> AsyncIterator[str]:
        yield "Hello there."
        async with asyncio.timeout(5):
            await first_audio.wait()
        yield "How are you?"

    chunks: list[AudioChunk] = []
    async with asyncio.timeout(10):
        async for c in tts.synthesize(llm()):
            chunks.append(c)
            first_audio.set()
    await tts.aclose()
    source = ToneSource("ulaw_8000")
    assert b"".join(c.data for c in chunks) == source.encode("Hello there. ") + source.encode("How are you? ")
    assert {(c.encoding, c.sample_rate) for c in chunks} == {("ulaw", 8000)}
    journal = cloud.elevenlabs.journal
    init = journal.of("init")[0].data["message"]
    assert init["text"] == " " and init["generation_config"] == {"chunk_length_schedule": [50]}
    assert [e.data["text"] for e in journal.of("text")] == ["Hello there. ", "How are you? ", ""]
    assert journal.of("request")[0].data["output_format"] == "ulaw_8000"
    await journal.wait_for(lambda j: j.count("completed") == 1)


async def test_pcm_output_is_declared_and_resampled_by_the_converter(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url, output_format="pcm_16000")
    chunks = await synth(tts, clauses("Resample me please."))
    await tts.aclose()
    # the service's bytes, declared: the conversation's ChunkConverter is the one resampler
    assert {(c.encoding, c.sample_rate) for c in chunks} == {("pcm_s16le", 16000)}
    assert b"".join(c.data for c in chunks) == ToneSource("pcm_16000").encode("Resample me please. ")
    converter = ChunkConverter()
    pcm = b"".join(converter.convert(c) for c in chunks) + converter.flush()
    assert abs(len(pcm) // 2 - len("Resample me please. ") * 30 * 8) <= 16


async def test_warm_spare_socket_is_used_and_refilled(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url, keep_warm=True)
    await tts.warmup()
    assert cloud.elevenlabs.journal.count("request") == 1  # the spare, opened before any turn
    await synth(tts, clauses("One."))
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("request") == 2)  # refilled in the background
    await synth(tts, clauses("Two."))
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("request") == 3)
    assert cloud.elevenlabs.journal.count("completed") == 2
    await tts.aclose()
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("aborted") == 1)  # the last spare, closed


async def test_cancel_mid_stream_closes_the_socket(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_faults.chunk_delay_s = 0.02
    tts = make(cloud.http_url)
    async with contextlib.aclosing(tts.synthesize(clauses("A long sentence that takes a while."))) as out:
        await anext(out)
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("aborted") == 1)
    assert cloud.elevenlabs.journal.count("completed") == 0
    await tts.aclose()


async def test_text_source_failure_propagates_unchanged(cloud: FakeCloud) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "Hello."
        raise RuntimeError("llm died")

    tts = make(cloud.http_url)
    with pytest.raises(RuntimeError, match="llm died"):
        await synth(tts, broken())
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("aborted") == 1)
    await tts.aclose()


@pytest.mark.parametrize(("status", "retryable"), [(401, False), (429, True), (503, True)])
async def test_handshake_rejections(cloud: FakeCloud, status: int, retryable: bool) -> None:
    cloud.elevenlabs.ws_faults.status = status
    tts = make(cloud.http_url)
    with pytest.raises(ProviderError) as info:
        await synth(tts, clauses("Hi."))
    assert info.value.retryable is retryable and str(status) in str(info.value)
    assert_clean(info.value)
    await tts.aclose()


async def test_bad_key_is_rejected(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url, api_key="el-wrong-key-should-not-leak")
    with pytest.raises(ProviderError) as info:
        await tts.warmup()
    assert not info.value.retryable
    assert "el-wrong-key-should-not-leak" not in str(info.value)
    await tts.aclose()


async def test_connection_refused(refused_url: str) -> None:
    tts = make(refused_url)
    with pytest.raises(ProviderError) as info:
        await synth(tts, clauses("Hi."))
    assert info.value.retryable
    await tts.aclose()


async def test_no_first_audio_ends_at_the_read_backstop(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 5.0
    tts = make(cloud.http_url, read_timeout_s=0.3)
    with pytest.raises(ProviderError, match="first audio"):
        await synth(tts, clauses("Hi."))
    await tts.aclose()


async def test_slow_llm_is_not_a_tts_stall(cloud: FakeCloud) -> None:
    """Between clauses the server is silent because no text came: that must not time out."""

    async def slow_llm() -> AsyncIterator[str]:
        yield "First."
        await asyncio.sleep(0.5)
        yield "Second."

    tts = make(cloud.http_url, read_timeout_s=0.2)
    chunks = await synth(tts, slow_llm())
    assert sum(len(c.data) for c in chunks) == len(ToneSource("ulaw_8000").encode("First. Second. "))
    await tts.aclose()


async def test_stall_after_text_ended_ends_at_the_read_backstop(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_faults.stall_after = 2
    tts = make(cloud.http_url, read_timeout_s=0.3)
    with pytest.raises(ProviderError, match="stalled"):
        await synth(tts, clauses("A sentence long enough for several chunks."))
    await tts.aclose()


async def test_dropped_socket(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_faults.drop_after = 2
    tts = make(cloud.http_url)
    with pytest.raises(ProviderError, match="dropped") as info:
        await synth(tts, clauses("A sentence long enough for several chunks."))
    assert info.value.retryable
    await tts.aclose()


async def test_warmup_replaces_a_spare_too_old_to_use(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call starting after the spare aged past SPARE_MAX_AGE_S: warm-up opens a fresh one
    (the turn would otherwise throw the old one away and connect while the caller waits)."""
    from bridge.providers.tts import elevenlabs_ws

    tts = make(cloud.http_url, keep_warm=True)
    await tts.warmup()
    await tts.warmup()  # fresh: kept
    assert cloud.elevenlabs.journal.count("request") == 1
    monkeypatch.setattr(elevenlabs_ws, "SPARE_MAX_AGE_S", 0.0)
    await tts.warmup()  # stale: replaced
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("aborted") == 1)
    assert cloud.elevenlabs.journal.count("request") == 2
    monkeypatch.setattr(elevenlabs_ws, "SPARE_MAX_AGE_S", 50.0)
    await synth(tts, clauses("One."))
    assert cloud.elevenlabs.journal.count("request") in (2, 3)  # the turn used the new spare (+ refill)
    assert cloud.elevenlabs.journal.count("completed") == 1
    await tts.aclose()


@pytest.mark.parametrize("proxied", [True, False])
async def test_a_proxy_set_in_the_environment_is_still_used(
    cloud: FakeCloud, refused_url: str, monkeypatch: pytest.MonkeyPatch, proxied: bool
) -> None:
    """The proxy is looked up once, not per connect, but as websockets' default would: a
    proxy named in the environment carries the socket (here one that refuses: no request)."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    if proxied:
        monkeypatch.setenv("http_proxy", refused_url)
    tts = make(cloud.http_url)
    try:
        if proxied:
            with pytest.raises(ProviderError, match="connect failed"):
                await tts.warmup()
            assert cloud.elevenlabs.journal.count("request") == 0
        else:
            await tts.warmup()
            await cloud.elevenlabs.journal.wait_for(lambda j: j.count("request") == 1)
    finally:
        await tts.aclose()
