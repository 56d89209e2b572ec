"""bridge.sip.wire without sockets: the torture corpus through parse_message, and the response
builder's RFC 3261 §8.2.6 / RFC 3581 details."""

from __future__ import annotations

import pytest
from aiosipua import SipRequest

from bridge.sip.wire import BadMessage, build_response, parse_message, response_destination, tag_of
from tests.sip.corpus import MALFORMED, SDP, UNUSUAL, Case, _req

PORT, LPORT = 5060, 40000


def _render(case: Case, n: int = 1) -> bytes:
    return case.render(PORT, LPORT, n)


@pytest.mark.parametrize("case", [c for c in MALFORMED if c.wire], ids=lambda c: c.name)
def test_malformed_is_rejected_with_its_status(case: Case) -> None:
    if case.name == "response-stray":
        parse_message(_render(case))  # well-formed: dropped later as a stray, not here
        return
    with pytest.raises(BadMessage) as info:
        parse_message(_render(case))
    if case.name == "ack-garbage":  # rejected as a 400, but an ACK is never answered (§17.2.1)
        assert info.value.status == 400 and info.value.request is not None
        return
    assert info.value.status == (case.status or 0), info.value.reason
    if case.status:  # answerable: the request is kept so a response can be built from it
        assert isinstance(info.value.request, SipRequest)


@pytest.mark.parametrize("case", [c for c in MALFORMED if not c.wire] + UNUSUAL, ids=lambda c: c.name)
def test_valid_syntax_parses(case: Case) -> None:
    msg = parse_message(_render(case, 7))
    assert isinstance(msg, SipRequest)
    assert msg.call_id and msg.via and msg.from_addr is not None


def test_compact_and_folded_forms_mean_the_long_forms() -> None:
    compact = parse_message(_render(next(c for c in UNUSUAL if c.name == "compact-headers"), 3))
    assert compact.call_id == "compact-3@127.0.0.1"
    assert compact.get_header("content-type") == "application/sdp"
    assert compact.body == SDP.encode()
    folded = parse_message(_render(next(c for c in UNUSUAL if c.name == "folded-headers"), 4))
    assert folded.get_header("cseq").split() == ["1", "OPTIONS"]
    assert tag_of(folded.get_header("from")) == "f4"
    assert folded.via[0].branch == "z9hG4bK-w4"


def test_utf8_display_name_survives() -> None:
    msg = parse_message(_render(next(c for c in UNUSUAL if c.name == "utf8-display-name")))
    assert msg.from_addr is not None and "Jörg Müller" in (msg.from_addr.display_name or "")


def test_stream_transport_needs_content_length() -> None:
    data = Case("x", _req("OPTIONS", cl=None), 200).render(PORT, LPORT, 1)
    parse_message(data)  # fine on UDP
    with pytest.raises(BadMessage) as info:
        parse_message(data, stream=True)
    assert info.value.status == 400


def test_oversized_message_is_dropped_silently() -> None:
    data = Case("x", _req("OPTIONS", "X-Big: " + "z" * 70_000), 200).render(PORT, LPORT, 1)
    with pytest.raises(BadMessage) as info:
        parse_message(data)
    assert info.value.status == 0


def _options(via_params: str = ";rport") -> SipRequest:
    text = (f"OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1{via_params}\r\n"
            "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-proxy\r\n"
            "From: <sip:a@x>;tag=abc\r\nTo: <sip:b@y>\r\nCall-ID: c1\r\nCSeq: 7 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n")
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def test_response_copies_dialog_headers_and_stamps_the_top_via() -> None:
    req = _options()
    resp = build_response(req, 200, "OK", to_tag="ours", source=("192.0.2.5", 61000))
    vias = resp.get_header_values("via")
    assert vias[0] == "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;rport=61000;received=192.0.2.5"
    assert vias[1] == "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-proxy"  # untouched, in order
    assert resp.get_header("from") == "<sip:a@x>;tag=abc"
    assert tag_of(resp.get_header("to")) == "ours"
    assert (resp.call_id, resp.get_header("cseq")) == ("c1", "7 OPTIONS")


def test_to_tag_rules() -> None:
    req = _options()
    assert tag_of(build_response(req, 100, "Trying", to_tag="t").get_header("to")) is None  # 100: none
    tagged = parse_message(bytes(req).replace(b"To: <sip:b@y>", b"To: <sip:b@y>;tag=theirs"))
    assert isinstance(tagged, SipRequest)
    # In-dialog: the To tag already there is kept, never a second one.
    assert build_response(tagged, 200, "OK", to_tag="new").get_header("to") == "<sip:b@y>;tag=theirs"


def test_response_destination_honours_rport() -> None:
    assert response_destination(_options(";rport"), ("192.0.2.5", 61000)) == ("192.0.2.5", 61000)
    # Without rport: the source address at the Via port (§18.2.2).
    assert response_destination(_options(""), ("192.0.2.5", 61000)) == ("192.0.2.5", 5070)


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("<sip:a@x>;tag=abc", "abc"),
        ("<sip:a@x;tag=inuri>", None),  # a URI parameter, not the header's tag
        ('"T;tag=no" <sip:a@x> ; tag = yes', "yes"),
        ("sip:a@x;tag=bare", "bare"),
        ("<sip:a@x>", None),
        (None, None),
    ],
)
def test_tag_of(value: str | None, tag: str | None) -> None:
    assert tag_of(value) == tag


def _invite_via_proxies(to: str = "<sip:agent@y>") -> SipRequest:
    """An INVITE as two record-routing proxies deliver it: one header with two values (the
    second proxy double-record-routes across transports) and a separate one, in path order."""
    text = ("INVITE sip:agent@127.0.0.1 SIP/2.0\r\n"
            "Record-Route: <sip:10.0.0.9;transport=tcp;r2=on;lr>, <sip:10.0.0.9;r2=on;lr;ftag=x>\r\n"
            "Record-Route: <sip:10.0.0.8;lr>\r\n"
            "Via: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bK-p2\r\n"
            "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1\r\n"
            f"From: <sip:a@x>;tag=abc\r\nTo: {to}\r\nCall-ID: c2\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:a@10.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n")
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def _record_routes(data: bytes) -> list[str]:
    return [line.split(b":", 1)[1].strip().decode() for line in data.split(b"\r\n")
            if line.lower().startswith(b"record-route:")]


@pytest.mark.parametrize("code", [180, 183, 200])
def test_dialog_creating_response_copies_record_route_in_order(code: int) -> None:
    resp = build_response(_invite_via_proxies(), code, "X", to_tag="ours")
    # RFC 3261 §12.1.1: every value with its parameters, in order (a comma list may come back
    # as separate headers: §7.3.1 makes the two forms equivalent).
    assert _record_routes(bytes(resp)) == [
        "<sip:10.0.0.9;transport=tcp;r2=on;lr>", "<sip:10.0.0.9;r2=on;lr;ftag=x>", "<sip:10.0.0.8;lr>"]


@pytest.mark.parametrize("code", [100, 401, 486, 503])
def test_responses_that_create_no_dialog_carry_no_record_route(code: int) -> None:
    assert _record_routes(bytes(build_response(_invite_via_proxies(), code, "X", to_tag="t"))) == []


def test_record_route_not_copied_outside_dialog_creation() -> None:
    reinvite = _invite_via_proxies("<sip:agent@y>;tag=ours")  # in-dialog: the route set is fixed
    assert _record_routes(bytes(build_response(reinvite, 200, "OK"))) == []
    assert _record_routes(bytes(build_response(_options(), 200, "OK", to_tag="t"))) == []
