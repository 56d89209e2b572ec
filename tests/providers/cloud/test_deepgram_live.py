"""The live socket deepgram_live.py opens instead of the SDK's connect: the same request the
SDK would make, no permessage-deflate, Deepgram's own reason for a refused request, and
messages read as plain JSON."""

from __future__ import annotations

import urllib.parse

import pytest
from deepgram.core.jsonable_encoder import jsonable_encoder
from deepgram.core.query_encoder import encode_query

from bridge.audio.g711 import pcm_to_ulaw, ulaw_to_pcm_keeping
from bridge.providers.base import ProviderError, Transcript
from bridge.providers.stt.deepgram_live import query_string
from bridge.providers.stt.deepgram_stt import DeepgramStream, DeepgramSTT
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY

from .conftest import assert_clean, silence, speech


def test_query_is_the_one_the_sdk_builds() -> None:
    options = DeepgramSTT(api_key="k").options
    sdk = urllib.parse.urlencode(encode_query(jsonable_encoder(options)))
    assert query_string(options) == sdk
    assert "interim_results=true" in sdk and "encoding=mulaw" in sdk and "sample_rate=8000" in sdk


async def test_socket_offers_no_compression_and_still_transcribes(cloud: FakeCloud) -> None:
    cloud.deepgram.script.append("No deflate.")
    stream = await DeepgramSTT(api_key=DEEPGRAM_KEY, url=cloud.http_url).open()
    for i in range(0, 16000, 320):
        await stream.send((speech(600) + silence(400))[i : i + 320])
    got = await _until_end_of_utterance(stream)
    assert got[-1].text == "No deflate."
    request = cloud.deepgram.journal.of("request")[0].data
    assert "permessage-deflate" not in request["extensions"]
    assert request["query"]["encoding"] == "mulaw"


async def test_a_plivo_mulaw_frame_reaches_deepgram_as_the_caller_sent_it(cloud: FakeCloud) -> None:
    """Plivo's mu-law goes to Deepgram (encoding=mulaw&sample_rate=8000, as documented) as it
    came, not decoded and encoded again; plain PCM from elsewhere is encoded."""
    cloud.deepgram.script.append("Same bytes.")
    loud = pcm_to_ulaw(speech(600)) + bytes([0x7F]) * 3200  # 0x7F: silence that re-encodes as 0xFF
    stream = await DeepgramSTT(api_key=DEEPGRAM_KEY, url=cloud.http_url).open()
    for i in range(0, len(loud), 160):
        await stream.send(ulaw_to_pcm_keeping(loud[i : i + 160]))
    await stream.send(silence(20))  # plain PCM (not from a mu-law stream): encoded
    got = await _until_end_of_utterance(stream)
    assert got[-1].text == "Same bytes."  # the fake decoded it as mu-law
    assert bytes(cloud.deepgram.audio) == loud + pcm_to_ulaw(silence(20))


async def test_refused_model_names_deepgrams_reason(cloud: FakeCloud) -> None:
    stt = DeepgramSTT(api_key=DEEPGRAM_KEY, url=cloud.http_url, model="nova-99")
    with pytest.raises(ProviderError) as info:
        await stt.open()
    assert not info.value.retryable
    assert "HTTP 400" in str(info.value) and "No such model" in str(info.value)
    assert_clean(info.value)


def test_results_without_a_transcript_are_skipped() -> None:
    s = DeepgramStream(DeepgramSTT(api_key="k"))  # no socket needed to handle a message
    s._results({"type": "Results", "is_final": True, "speech_final": True})  # no channel
    s._results({"type": "Results", "channel": {"alternatives": "x"}, "is_final": True})
    assert s._queue.empty()
    s._results({"type": "Results", "is_final": True, "speech_final": True, "start": 0.0, "duration": 1.0,
                "channel": {"alternatives": [{"transcript": " Yes. ", "confidence": 0.9}]}})
    assert s._queue.get_nowait() == Transcript("Yes.", True, True, 0.9)


async def _until_end_of_utterance(stream: DeepgramStream) -> list[Transcript]:
    got: list[Transcript] = []
    async for t in stream.transcripts():
        got.append(t)
        if t.end_of_utterance:
            break
    await stream.close()
    return got
