"""Deepgram live STT: the real deepgram-sdk against the fake live WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from bridge.providers.base import ProviderError, Transcript
from bridge.providers.stt.deepgram_stt import DeepgramStream, DeepgramSTT
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY

from .conftest import assert_clean, silence, speech


def make(cloud_url: str, **kw: object) -> DeepgramSTT:
    opts: dict[str, object] = {"api_key": DEEPGRAM_KEY, "url": cloud_url, "connect_timeout_s": 2.0}
    opts.update(kw)
    return DeepgramSTT(**opts)  # type: ignore[arg-type]


async def push(stream: DeepgramStream, audio: bytes, frame: int = 320) -> None:
    for i in range(0, len(audio), frame):
        await stream.send(audio[i : i + frame])


async def collect_until(stream: DeepgramStream, finals: int, limit_s: float = 5.0) -> list[Transcript]:
    """Transcripts until `finals` end-of-utterance results arrived."""
    got: list[Transcript] = []
    async with asyncio.timeout(limit_s):
        async for t in stream.transcripts():
            got.append(t)
            if sum(1 for g in got if g.end_of_utterance) >= finals:
                break
    return got


async def test_mulaw_interim_and_final_transcripts(cloud: FakeCloud) -> None:
    cloud.deepgram.script.extend(["Hello there.", "I need help."])
    stream = await make(cloud.http_url).open()
    await push(stream, speech(900) + silence(400) + speech(700) + silence(400))
    got = await collect_until(stream, 2)
    await stream.close()
    finals = [t.text for t in got if t.is_final and t.end_of_utterance]
    assert finals == ["Hello there.", "I need help."]
    assert any(not t.is_final for t in got)  # interim results came first
    query = cloud.deepgram.journal.of("request")[0].data["query"]
    assert query["encoding"] == "mulaw" and query["sample_rate"] == "8000"
    assert query["interim_results"] == "true" and query["endpointing"] == "300"
    assert query["utterance_end_ms"] == "1000" and query["vad_events"] == "true"
    # close sent CloseStream and the server finished cleanly (Metadata, close)
    await cloud.deepgram.journal.wait_for(lambda j: j.count("completed") == 1)
    assert [e.data["type"] for e in cloud.deepgram.journal.of("control")] == ["CloseStream"]


async def test_linear16_option_sends_pcm(cloud: FakeCloud) -> None:
    cloud.deepgram.script.append("Plain PCM.")
    stream = await make(cloud.http_url, encoding="linear16").open()
    await push(stream, speech(600) + silence(400))
    got = await collect_until(stream, 1)
    await stream.close()
    assert got[-1].text == "Plain PCM."
    assert cloud.deepgram.journal.of("request")[0].data["query"]["encoding"] == "linear16"


async def test_finalize_ends_the_turn_before_endpointing(cloud: FakeCloud) -> None:
    cloud.deepgram.script.append("Quick answer.")
    stream = await make(cloud.http_url, endpointing_ms=3000).open()
    await push(stream, speech(600) + silence(100))  # far less silence than the endpointing window
    await stream.finalize()
    got = await collect_until(stream, 1)
    await stream.close()
    assert got[-1] == Transcript("Quick answer.", True, True, 0.98)
    assert cloud.deepgram.journal.of("control")[0].data["type"] == "Finalize"


async def test_finalize_with_nothing_said_is_not_answered_but_still_ends(cloud: FakeCloud) -> None:
    """Documented: no from_finalize reply without significant audio. The fake stays silent;
    the client answers that Finalize itself (exactly one end per finalize())."""
    stream = await make(cloud.http_url).open()
    await push(stream, silence(200))
    await stream.finalize()
    got = await collect_until(stream, 1)
    await cloud.deepgram.journal.wait_for(lambda j: j.count("finalize_unanswered") == 1)
    await stream.close()
    assert got == [Transcript("", True, True, 0.0)]
    assert not [e for e in cloud.deepgram.journal.of("sent") if e.data.get("from_finalize")]


async def test_keepalive_while_no_audio_flows(cloud: FakeCloud) -> None:
    cloud.deepgram.idle_timeout_s = 0.5
    stream = await make(cloud.http_url, keepalive_s=0.1).open()
    await cloud.deepgram.journal.wait_for(
        lambda j: sum(1 for e in j.of("control") if e.data["type"] == "KeepAlive") >= 12
    )  # well past the idle timeout
    await stream.close()
    assert cloud.deepgram.journal.count("idle_closed") == 0
    assert stream.reconnects == 0


async def test_dropped_socket_reconnects_and_keeps_the_words(cloud: FakeCloud) -> None:
    """The socket dies in the middle of an utterance: the words must still arrive."""
    cloud.deepgram.script.extend(["First part.", "Do not lose me."])
    first = speech(600) + silence(400)
    cloud.deepgram.faults.drop_after = len(first) // 2 + 3000  # mu-law bytes: mid second utterance
    cloud.deepgram.faults.fault_times = 1
    stream = await make(cloud.http_url).open()
    await push(stream, first)
    got = await collect_until(stream, 1)
    await push(stream, speech(800))
    await cloud.deepgram.journal.wait_for(lambda j: j.count("dropped") == 1)
    await push(stream, silence(400))
    got += await collect_until(stream, 1)
    await stream.close()
    assert [t.text for t in got if t.end_of_utterance] == ["First part.", "Do not lose me."]
    assert stream.reconnects == 1
    assert cloud.deepgram.journal.count("request") == 2


async def test_stalled_socket_is_detected_and_replaced(cloud: FakeCloud) -> None:
    cloud.deepgram.script.append("After the stall.")
    cloud.deepgram.faults.stall_after = 0  # first connection never answers
    cloud.deepgram.faults.fault_times = 1
    stream = await make(cloud.http_url, stall_timeout_s=0.3).open()
    await push(stream, speech(600) + silence(400))
    got = await collect_until(stream, 1)
    await stream.close()
    assert got[-1].text == "After the stall." and got[-1].end_of_utterance
    assert stream.reconnects == 1


async def test_repeated_drops_fail_over_with_provider_error(cloud: FakeCloud) -> None:
    cloud.deepgram.faults.drop_after = 100  # every connection dies
    stream = await make(cloud.http_url, max_reconnects=2).open()
    with pytest.raises(ProviderError) as info:
        await push(stream, speech(300))
        async with asyncio.timeout(5):
            async for _ in stream.transcripts():
                pass
    assert info.value.retryable
    assert cloud.deepgram.journal.count("request") == 3  # first + 2 reconnects
    with pytest.raises(ProviderError):
        await stream.send(speech(20))  # the engine learns it on the send side too
    await stream.close()
    assert_clean(info.value)


async def test_bad_key_is_not_retryable_and_not_leaked(
    cloud: FakeCloud, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stt = DeepgramSTT(api_key="dg-wrong-key-should-not-leak", url=cloud.http_url)
    with pytest.raises(ProviderError) as info:
        await stt.open()
    assert not info.value.retryable and "401" in str(info.value)
    assert_clean(info.value)
    assert "dg-wrong-key-should-not-leak" not in "".join(__import__("traceback").format_exception(info.value))
    assert "dg-wrong-key-should-not-leak" not in caplog.text


@pytest.mark.parametrize("status", [429, 503])
async def test_service_errors_are_retryable(cloud: FakeCloud, status: int) -> None:
    cloud.deepgram.faults.status = status
    with pytest.raises(ProviderError) as info:
        await make(cloud.http_url).open()
    assert info.value.retryable and str(status) in str(info.value)
    assert_clean(info.value)


async def test_connection_refused(refused_url: str) -> None:
    with pytest.raises(ProviderError) as info:
        await make(refused_url).open()
    assert info.value.retryable
    assert_clean(info.value)


async def test_reconnect_refused_surfaces_as_provider_error(cloud: FakeCloud) -> None:
    cloud.deepgram.faults.drop_after = 100
    cloud.deepgram.faults.fault_times = 1
    stream = await make(cloud.http_url).open()
    cloud.deepgram.faults.status = 503  # the reconnect is refused
    await push(stream, speech(200))
    with pytest.raises(ProviderError) as info:
        async with asyncio.timeout(5):
            async for _ in stream.transcripts():
                pass
    assert "503" in str(info.value)
    await stream.close()


async def test_close_mid_utterance_releases_the_socket(cloud: FakeCloud) -> None:
    stream = await make(cloud.http_url).open()
    await push(stream, speech(300))
    await stream.close()
    await cloud.deepgram.journal.wait_for(lambda j: j.count("completed") + j.count("aborted") == 1)
    with contextlib.suppress(ProviderError):
        await stream.send(speech(20))  # after close: ignored, no crash


@pytest.mark.parametrize("on_silence", [False, True])
async def test_last_interim_before_the_final_follows_the_cadence_or_the_silence(
    cloud: FakeCloud, on_silence: bool
) -> None:
    """Undocumented either way, so the fake plays both: with interims on their cadence only
    (1 s, as documented for UtteranceEnd), the last interim of a 1.3 s utterance misses its
    last words; with ``interim_on_silence`` one interim with every word comes before the final."""
    cloud.deepgram.interim_every_ms = 1000
    cloud.deepgram.interim_on_silence = on_silence
    cloud.deepgram.script.append("Where are you located today?")
    stream = await make(cloud.http_url).open()
    await push(stream, speech(1300) + silence(400))
    got = await collect_until(stream, 1)
    await stream.close()
    interims = [t.text for t in got if not t.is_final and t.text]
    assert interims[0] == "Where are you"  # the cadence's, at 1 s: the words heard by then
    if on_silence:
        assert interims == ["Where are you", "Where are you located today?"]
    else:
        assert interims == ["Where are you"]
    assert [t.text for t in got if t.end_of_utterance] == ["Where are you located today?"]
