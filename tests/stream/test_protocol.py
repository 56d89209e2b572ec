"""Plivo stream messages: parsed strictly, built as Plivo expects."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.callfacts import decode_value, encode_headers, encode_value, stream_token, token_valid
from bridge.stream import protocol
from bridge.stream.callfacts import parse_extra_headers


def test_start_parsed() -> None:
    msg = protocol.parse(json.dumps({
        "event": "start", "sequenceNumber": 1,
        "start": {"callId": "c1", "streamId": "s1", "accountId": "MA1", "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
        "extra_headers": "From=ZZ2B3931",
    }))
    assert isinstance(msg, protocol.Start)
    assert (msg.call_id, msg.stream_id, msg.media_format.encoding) == ("c1", "s1", "audio/x-mulaw")
    assert parse_extra_headers(msg.extra_headers) == {"From": "+91"}


def test_media_dtmf_played_cleared() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    media = protocol.parse(json.dumps({"event": "media", "media": {"payload": payload, "timestamp": "40"}}))
    assert isinstance(media, protocol.Media) and media.payload == b"\xff" * 160 and media.timestamp_ms == 40
    assert protocol.parse('{"event":"dtmf","dtmf":{"digit":"5"}}') == protocol.Dtmf("5", "inbound")
    assert protocol.parse('{"event":"playedStream","name":"vb3"}') == protocol.PlayedStream("vb3")
    assert protocol.parse('{"event":"clearedAudio"}') == protocol.ClearedAudio()
    assert isinstance(protocol.parse('{"event":"whatever"}'), protocol.Unknown)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1,2]",
        '{"no":"event"}',
        '{"event":"media"}',
        '{"event":"media","media":{"payload":"@@@"}}',
        '{"event":"start","start":{}}',
        '{"event":"start","start":{"callId":"c","mediaFormat":{"encoding":"audio/x-l16","sampleRate":16000}}}',
        '{"event":"dtmf","dtmf":{"digit":"55"}}',
        '{"event":"playedStream"}',
        b"\xff\xfe",
    ],
)
def test_bad_messages_raise_protocol_error(raw: str | bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.parse(raw)


def test_outgoing_messages() -> None:
    fmt = protocol.MediaFormat("audio/x-mulaw", 8000)
    play = json.loads(protocol.play_audio(fmt, b"\x01\x02"))
    assert play == {"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,
                                                    "payload": "AQI="}}
    assert json.loads(protocol.checkpoint("s", "n")) == {"event": "checkpoint", "streamId": "s", "name": "n"}
    assert json.loads(protocol.clear_audio("s")) == {"event": "clearAudio", "streamId": "s"}


@pytest.mark.parametrize("value", ["abc123", "+919876543210", "3b5a1a64-8e3e-11ee", "ZZ41", "", "émile x"])
def test_header_values_round_trip_between_processes(value: str) -> None:
    encoded = encode_value(value)
    assert encoded.isalnum() or encoded == ""
    assert decode_value(encoded) == value


def test_headers_and_token_agree_between_xml_server_and_daemon() -> None:
    raw = encode_headers({"CallUUID": "a-b", "From": "+9198", "Token": stream_token("k", "a-b")})
    facts = parse_extra_headers(raw)
    assert facts["CallUUID"] == "a-b" and facts["From"] == "+9198"
    assert token_valid("k", "a-b", facts["Token"])
    assert not token_valid("other", "a-b", facts["Token"])
    assert parse_extra_headers('{"X-PH-From": "ZZ2B"}') == {"From": "+"}
    assert parse_extra_headers(None) == {}
    with pytest.raises(ValueError):
        encode_headers({"PlivoThing": "x"})
