"""Plivo stream messages: parsed strictly, built as Plivo expects."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.audio.g711 import as_ulaw, ulaw_to_pcm
from bridge.callfacts import (
    MAX_EXTRA_HEADERS,
    MAX_VALUE,
    decode_value,
    encode_headers,
    encode_value,
    facts_from_sip_headers,
    fit,
    name_problem,
    stream_token,
    token_valid,
    value_problem,
)
from bridge.stream import protocol
from bridge.stream.callfacts import parse_extra_headers


def test_start_parsed() -> None:
    msg = protocol.parse(json.dumps({
        "event": "start", "sequenceNumber": 1,
        "start": {"callId": "c1", "streamId": "s1", "accountId": "MA1", "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
        "extra_headers": "From=%2B91;Agent=sales",
    }))
    assert isinstance(msg, protocol.Start)
    assert (msg.call_id, msg.stream_id, msg.media_format.encoding) == ("c1", "s1", "audio/x-mulaw")
    assert parse_extra_headers(msg.extra_headers) == {"From": "+91", "Agent": "sales"}


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
        '{"event":"media","media":{"payload":"AQI=="}}',  # data after the padding
        '{"event":"media","media":{"payload":"AQ I="}}',
        '{"event":"media","media":{"payload":"\u00e9AA="}}',  # not ASCII
        '{"event":"start","start":{}}',
        '{"event":"start","start":{"callId":"c","mediaFormat":{"encoding":"audio/x-l16","sampleRate":44100}}}',
        '{"event":"dtmf","dtmf":{"digit":"55"}}',
        '{"event":"playedStream"}',
        b"\xff\xfe",
    ],
)
def test_bad_messages_raise_protocol_error(raw: str | bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.parse(raw)
    with pytest.raises(protocol.ProtocolError):  # as bytes too (the media fast path's input)
        protocol.parse(raw.encode() if isinstance(raw, str) else raw)


def test_mulaw_payload_decodes_to_pcm_that_keeps_the_payload() -> None:
    payload = bytes([0x7F, 0x10, 0xFF] * 53 + [0x00])  # 160 bytes, 20 ms
    pcm = protocol.MediaFormat("audio/x-mulaw", 8000).decoder()(payload)
    assert pcm == ulaw_to_pcm(payload) and len(pcm) == 320
    assert as_ulaw(pcm) == payload  # the STT is sent these very bytes (0x7F would re-encode as 0xFF)


def test_outgoing_messages() -> None:
    fmt = protocol.MediaFormat("audio/x-mulaw", 8000)
    play = json.loads(protocol.play_audio(fmt, b"\x01\x02"))
    assert play == {"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,
                                                    "payload": "AQI="}}
    assert json.loads(protocol.checkpoint("s", "n")) == {"event": "checkpoint", "streamId": "s", "name": "n"}
    assert json.loads(protocol.clear_audio("s")) == {"event": "clearAudio", "streamId": "s"}


@pytest.mark.parametrize("fmt", protocol.SUPPORTED_FORMATS)
@pytest.mark.parametrize("ids", [("s-1", "vb1"), ("3b5a1a64-8e3e-11ee", "vb123456"),
                                 ('q"uo\\te', "é\n\u2028")])
def test_outgoing_messages_are_exactly_what_json_dumps_writes(fmt: protocol.MediaFormat,
                                                               ids: tuple[str, str]) -> None:
    """play_audio and checkpoint are built from parts (no json.dumps per chunk): byte for byte
    what json.dumps writes, whatever the stream id and name hold."""
    stream_id, name = ids
    payload = bytes(range(256)) * 7
    assert protocol.play_audio(fmt, payload) == json.dumps({"event": "playAudio", "media": {
        "contentType": fmt.content_type, "sampleRate": fmt.sample_rate,
        "payload": base64.b64encode(payload).decode()}})
    assert protocol.checkpoint(stream_id, name) == json.dumps(
        {"event": "checkpoint", "streamId": stream_id, "name": name})


@pytest.mark.parametrize("value", ["abc123", "+919876543210", "3b5a1a64-8e3e-11ee", "ZZ41", "", "é x", "5%"])
def test_header_values_round_trip_between_processes(value: str) -> None:
    encoded = encode_value(value)
    assert value_problem(encoded, 10_000) == ""  # letters, digits and % only: what Plivo carries
    assert decode_value(encoded) == value


def test_values_are_percent_encoded_as_plivo_documents_and_a_call_uuid_fits_48() -> None:
    call_uuid = "3b5a1a64-8e3e-11ee-a2f1-0242ac120002"
    assert encode_value(call_uuid) == "3b5a1a64%2D8e3e%2D11ee%2Da2f1%2D0242ac120002"
    assert len(encode_value(call_uuid)) == 44 <= MAX_VALUE
    assert encode_value("+919876543210") == "%2B919876543210"


@pytest.mark.parametrize("name", ["Calluuid", "From", "To", "Direction", "Agent", "Token", "Vbcall"])
def test_the_names_the_bridge_sends_follow_plivos_rule(name: str) -> None:
    assert name_problem(name) == ""


@pytest.mark.parametrize("name", ["CallUUID", "vbcall", "From1X", "Plivoid", "Sipauthx", "Clientregion",
                                  "Averyveryverylongname"])
def test_names_plivo_would_drop_are_refused(name: str) -> None:
    assert name_problem(name) != ""
    with pytest.raises(ValueError):
        encode_headers({name: "x"})


def test_a_value_too_long_once_encoded_is_dropped_not_sent() -> None:
    fitted = fit({"From": "+91" * 20, "To": "+9180"})
    assert fitted.dropped == ("From",) and fitted.header_text() == "To=%2B9180"
    with pytest.raises(ValueError):
        encode_headers({"From": "+91" * 20})


def test_headers_and_token_agree_between_xml_server_and_daemon() -> None:
    facts = {"From": "+9198", "Agent": "sales"}
    raw = encode_headers({**facts, "Token": stream_token("k", "a-b", facts)})
    got = parse_extra_headers(raw.replace(",", ";"))  # as Plivo delivers them
    token = got.pop("Token")
    assert got == facts
    assert token_valid("k", "a-b", token, got)
    assert not token_valid("other", "a-b", token, got)
    assert not token_valid("k", "a-c", token, got)  # another call
    assert not token_valid("k", "a-b", token, {**got, "From": "+9199"})  # facts swapped
    assert parse_extra_headers('{"X-PH-From": "%2B"}') == {"From": "+"}
    assert parse_extra_headers(None) == {}


def test_raw_mode_sip_header_names_are_read_too() -> None:
    headers = {"X-PH-From": ["%2B91"], "X-CallUUID": ["ab%2D1"], "X-Other": ["x"], "Via": ["v"]}
    assert facts_from_sip_headers(headers.items()) == {"From": "%2B91", "Calluuid": "ab%2D1"}


def test_the_largest_possible_extra_headers_fit_plivos_512_bytes() -> None:
    # Every fact at the longest value the rules let through, plus the token: the guard on
    # extraHeaders holds by construction, whatever the caller's number or the route's agent.
    worst = {name: "+" * 16 for name in ("From", "To", "Direction", "Agent", "Calluuid")}
    facts = fit(worst)
    assert not facts.dropped
    facts.encoded["Token"] = stream_token("k", "c" * 36, worst)
    assert len(facts.header_text().encode()) <= MAX_EXTRA_HEADERS
