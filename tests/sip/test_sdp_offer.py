"""Offer/answer for one G.711 stream (RFC 3264) with telephone-event (RFC 4733), no sockets."""

from __future__ import annotations

import pytest

from bridge.sip.sdp_offer import SdpError, SessionDescription, negotiate, parse_offer


def _offer(formats: str, *attrs: str, conn: str = "192.0.2.10", port: int = 40000,
           proto: str = "RTP/AVP") -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", f"c=IN IP4 {conn}", "t=0 0",
             f"m=audio {port} {proto} {formats}", *attrs]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_our_preference_wins_and_the_dtmf_pt_is_mirrored() -> None:
    offer = parse_offer(_offer("8 0 96", "a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000",
                               "a=rtpmap:96 telephone-event/8000", "a=ptime:20"))
    media = negotiate(offer, ["PCMU", "PCMA"])
    assert (media.codec, media.payload_type, media.dtmf_payload_type) == ("PCMU", 0, 96)
    assert (media.remote_host, media.remote_port, media.direction) == ("192.0.2.10", 40000, "sendrecv")
    assert negotiate(offer, ["PCMA", "PCMU"]).codec == "PCMA"


def test_static_payload_types_without_rtpmap() -> None:
    media = negotiate(parse_offer(_offer("0")), ["PCMA", "PCMU"])
    assert (media.codec, media.payload_type, media.dtmf_payload_type) == ("PCMU", 0, None)


@pytest.mark.parametrize(
    ("attr", "ours"),
    [("a=sendonly", "recvonly"), ("a=recvonly", "sendonly"), ("a=inactive", "inactive"),
     ("a=sendrecv", "sendrecv")],
)
def test_direction_is_flipped(attr: str, ours: str) -> None:
    assert negotiate(parse_offer(_offer("0", attr)), ["PCMU"]).direction == ours


def test_rfc2543_hold_with_zero_address() -> None:
    assert negotiate(parse_offer(_offer("0", conn="0.0.0.0")), ["PCMU"]).direction == "recvonly"


@pytest.mark.parametrize(
    "body",
    [
        _offer("18", "a=rtpmap:18 G729/8000"),  # no common codec
        _offer("0", port=0),  # the audio stream is refused
        _offer("0", proto="RTP/SAVP"),  # SRTP
        _offer("96", "a=rtpmap:96 PCMU/16000"),  # right name, wrong clock rate
        b"\xff\xfe not utf-8",
        b"v=0\r\ns=-\r\n",  # no media at all
    ],
)
def test_unanswerable_offers(body: bytes) -> None:
    with pytest.raises(SdpError):
        negotiate(parse_offer(body), ["PCMU", "PCMA"])


def test_answer_has_one_codec_and_the_version_moves_only_on_change() -> None:
    sd = SessionDescription("203.0.113.7", 30000, "voice bridge")
    media = negotiate(parse_offer(_offer("0 101", "a=rtpmap:101 telephone-event/8000")), ["PCMU"])
    first = sd.answer(media).decode()
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in first and "c=IN IP4 203.0.113.7" in first
    assert "a=rtpmap:101 telephone-event/8000" in first and "a=sendrecv" in first
    assert "o=voice-bridge " in first  # no space in the o= username

    def version(body: str) -> int:
        return int(next(line for line in body.splitlines() if line.startswith("o=")).split()[2])

    assert version(sd.answer(media).decode()) == version(first)  # unchanged: same version
    dtmf = "a=rtpmap:101 telephone-event/8000"
    held = negotiate(parse_offer(_offer("0 101", dtmf, "a=sendonly")), ["PCMU"])
    assert version(sd.answer(held).decode()) == version(first) + 1


def test_late_offer_lists_all_our_codecs() -> None:
    body = SessionDescription("127.0.0.1", 30000).offer(["PCMU", "PCMA"], 101).decode()
    assert "m=audio 30000 RTP/AVP 0 8 101" in body
    # Our own offer parses back, as the peer's answer would.
    assert negotiate(parse_offer(body.encode()), ["PCMA"]).codec == "PCMA"
