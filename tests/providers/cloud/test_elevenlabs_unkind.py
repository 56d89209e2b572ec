"""ElevenLabs as unkind as the service (reference/providers-documented.md): a quota 401 that is
not a bad key, formats refused below their plan, the stream-input idle timeout and the
``{message, error, code: 1008}`` error frames; the real SDK / websockets clients against each."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession, WSMsgType

from bridge.providers.base import ProviderError
from bridge.providers.tts import elevenlabs_ws
from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS
from bridge.providers.tts.elevenlabs_ws import ElevenLabsWsTTS
from devkit.fakes import FakeCloud
from devkit.fakes.server import ELEVENLABS_KEY

from .conftest import assert_clean, clauses
from .test_elevenlabs_http import make as make_http
from .test_elevenlabs_http import synth as synth_http
from .test_elevenlabs_ws import make as make_ws
from .test_elevenlabs_ws import synth as synth_ws


async def _refusal(tts: ElevenLabsHttpTTS | ElevenLabsWsTTS) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        if isinstance(tts, ElevenLabsHttpTTS):
            await synth_http(tts, "Hello.")
        else:
            await synth_ws(tts, clauses("Hello."))
    await tts.aclose()
    assert_clean(info.value)
    return info.value


@pytest.mark.parametrize("client", ["http", "ws"])
async def test_quota_exceeded_says_quota_not_check_the_key(cloud: FakeCloud, client: str) -> None:
    cloud.elevenlabs.quota_exceeded = True
    tts = make_http(cloud.http_url) if client == "http" else make_ws(cloud.http_url)
    error = await _refusal(tts)
    assert not error.retryable
    assert "quota" in str(error) and "ELEVENLABS_API_KEY" not in str(error)
    assert cloud.elevenlabs.journal.of("rejected")[0].data == {"status": 401, "reason": "quota_exceeded"}


@pytest.mark.parametrize("client", ["http", "ws"])
async def test_paid_tier_format_is_refused_on_a_free_plan(cloud: FakeCloud, client: str) -> None:
    options = {"output_format": "pcm_44100"}
    tts = make_http(cloud.http_url, **options) if client == "http" else make_ws(cloud.http_url, **options)
    error = await _refusal(tts)
    assert not error.retryable and "plan" in str(error) and "403" in str(error)
    cloud.elevenlabs.tier = "pro"
    tts = make_http(cloud.http_url, **options) if client == "http" else make_ws(cloud.http_url, **options)
    chunks = await (synth_http(tts, "Hello.") if isinstance(tts, ElevenLabsHttpTTS)
                    else synth_ws(tts, clauses("Hello.")))
    await tts.aclose()
    assert chunks and {(c.encoding, c.sample_rate) for c in chunks} == {("pcm_s16le", 44100)}  # declared


async def test_idle_stream_input_socket_is_closed_1008_and_not_reused(cloud: FakeCloud) -> None:
    """The server drops an idle socket after its inactivity_timeout (the client asks 60 s;
    scaled down here): a spare socket that died this way must not be used for a turn."""
    cloud.elevenlabs.timeout_scale = 0.005  # 60 s -> 0.3 s
    tts = make_ws(cloud.http_url, keep_warm=True)
    await tts.warmup()
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("ws_error") == 1)
    assert cloud.elevenlabs.journal.of("ws_error")[0].data == {"error": "input_timeout_exceeded"}
    cloud.elevenlabs.timeout_scale = 1.0
    await asyncio.sleep(0.05)  # the client's reader sees the close frame
    chunks = await synth_ws(tts, clauses("Still works."))
    await tts.aclose()
    assert chunks
    # the client retires spares before the 60 s it asked for, and asks more than the 20 s default
    assert elevenlabs_ws.SPARE_MAX_AGE_S < elevenlabs_ws.INACTIVITY_TIMEOUT_S
    request = cloud.elevenlabs.journal.of("request")[0]
    assert request.data["ws"] is True


async def test_idle_timeout_default_is_20_s_without_the_parameter(cloud: FakeCloud) -> None:
    """The fake reads inactivity_timeout: without it the documented 20 s applies."""
    cloud.elevenlabs.timeout_scale = 0.01  # 20 s -> 0.2 s
    url = f"{cloud.http_url}/v1/text-to-speech/v1/stream-input?model_id=m&output_format=ulaw_8000"
    async with ClientSession() as http, http.ws_connect(url, headers={"xi-api-key": ELEVENLABS_KEY}) as ws:
        async with asyncio.timeout(5):
            frame = await ws.receive_json()
            closing = await ws.receive()
    assert frame["error"] == "input_timeout_exceeded" and frame["code"] == 1008
    assert "20 seconds" not in frame["message"] and "0.2 seconds" in frame["message"]
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == 1008


async def test_error_frame_then_close_1008_is_a_provider_error(cloud: FakeCloud) -> None:
    message = "Invalid message received: text must end with a space."
    cloud.elevenlabs.ws_error = ("invalid_input_message", message)
    tts = make_ws(cloud.http_url)
    error = await _refusal(tts)
    assert "invalid_input_message" in str(error)
    assert cloud.elevenlabs.journal.of("ws_error")[0].data == {"error": "invalid_input_message"}
