"""The simulated Plivo caller's media event: what Plivo documents (event, sequenceNumber,
streamId, media.track/timestamp/chunk/payload, extra_headers), serialized as json.dumps would,
for mu-law and L16, with frames repeated across callers encoded the same."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from bridge.audio.g711 import pcm_to_ulaw
from bridge.simulator.plivo.stream_client import PlivoStreamClient


@pytest.mark.parametrize("encoding", ["audio/x-mulaw", "audio/x-l16"])
def test_media_event_is_plivos_shape_and_json_dumps_text(encoding: str) -> None:
    pcm = (3000 * np.sin(np.arange(160) / 5)).astype("<i2").tobytes()
    first = PlivoStreamClient("ws://127.0.0.1:1/stream", call_uuid="c-1", extra_headers="a=1",
                              encoding=encoding)
    other = PlivoStreamClient("ws://127.0.0.1:1/stream", call_uuid="c-2", encoding=encoding)
    for client in (first, other, first):  # the second use of a frame comes from the cache
        text = client.media_message(pcm, 7)
        msg = json.loads(text)
        assert text == json.dumps(msg)  # byte for byte what json.dumps writes
        assert set(msg) == {"event", "sequenceNumber", "streamId", "media", "extra_headers"}
        assert msg["event"] == "media" and msg["streamId"] == client.stream_id
        assert msg["extra_headers"] == client.extra_headers
        media = msg["media"]
        assert media["track"] == "inbound" and media["chunk"] == 7 and media["timestamp"].isdigit()
        wire = pcm_to_ulaw(pcm) if encoding == "audio/x-mulaw" else pcm
        assert base64.b64decode(media["payload"]) == wire
    assert json.loads(first.media_message(pcm, 8))["sequenceNumber"] == 3  # start took none here
