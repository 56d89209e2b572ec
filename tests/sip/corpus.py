"""RFC 4475-style torture corpus: malformed messages with the answer RFC 3261 calls for, and
valid-but-unusual ones that must be accepted. Shared by the unit tests (tests/sip) and the
wire tests against the daemon (tests/sipp).

Templates are filled with {port} (the daemon), {lport} (the sender), {n} (unique per send).
"""

from __future__ import annotations

from dataclasses import dataclass

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)
SDP_G729 = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
)


@dataclass(frozen=True)
class Case:
    name: str
    text: str  # a template (see the module docstring); CRLF line ends are added by render()
    status: int | None  # the expected final answer, None: silently dropped
    body: str = ""
    # True: parse_message alone decides (raises BadMessage with `status`, or accepts); False: the
    # message parses and the server's call logic gives the answer.
    wire: bool = True
    crlf: bool = True  # False: bare LF line ends, as some old UAs send

    def render(self, port: int, lport: int, n: int) -> bytes:
        eol = "\r\n" if self.crlf else "\n"
        head = self.text.format(port=port, lport=lport, n=n).strip("\n").replace("\n", eol)
        return (head + eol + eol + self.body).encode("utf-8")


def _req(method: str, *extra: str, cseq: str | None = None, skip: tuple[str, ...] = (),
         uri: str = "sip:agent@127.0.0.1:{port}", version: str = "SIP/2.0", cl: str | None = "auto",
         body: str = "") -> str:
    """A request template with the usual headers; `skip` drops some, `extra` adds raw lines."""
    lines = {
        "via": "Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-t{n};rport",
        "from": "From: <sip:caller@127.0.0.1>;tag=f{n}",
        "to": "To: <sip:agent@127.0.0.1>",
        "call-id": "Call-ID: torture-{n}@127.0.0.1",
        "cseq": f"CSeq: {cseq or '1 ' + method}",
        "max-forwards": "Max-Forwards: 70",
        "contact": "Contact: <sip:caller@127.0.0.1:{lport}>",
    }
    out = [f"{method} {uri} {version}"]
    out += [v for k, v in lines.items() if k not in skip]
    out += list(extra)
    if cl == "auto":
        out.append(f"Content-Length: {len(body.encode())}")
    elif cl is not None:
        out.append(f"Content-Length: {cl}")
    return "\n".join(out)


INVITE_SDP = ("Content-Type: application/sdp",)

MALFORMED: list[Case] = [
    Case("garbage-binary", "\x00\x01\x02\xff\xfe garbage \x7f", None),
    Case("garbage-text", "hello world\nthis is not SIP", None),
    Case("response-stray", "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-s{n}\n"
         "From: <sip:a@127.0.0.1>;tag=1\nTo: <sip:b@127.0.0.1>;tag=2\nCall-ID: stray-{n}\n"
         "CSeq: 1 OPTIONS\nContent-Length: 0", None),
    Case("request-line-two-tokens", "OPTIONS sip:agent@127.0.0.1\nVia: SIP/2.0/UDP 127.0.0.1:{lport}"
         ";branch=z9hG4bK-r{n}\nCall-ID: x{n}\nCSeq: 1 OPTIONS", None),
    Case("no-via", _req("OPTIONS", skip=("via",)), None),
    Case("ack-garbage", _req("ACK", skip=("call-id",)), None),
    Case("content-length-too-big", _req("INVITE", *INVITE_SDP, cl="9999"), 400, SDP),
    Case("content-length-not-a-number", _req("INVITE", *INVITE_SDP, cl="abc"), 400, SDP),
    Case("content-length-negative", _req("INVITE", *INVITE_SDP, cl="-5"), 400, SDP),
    Case("missing-call-id", _req("INVITE", *INVITE_SDP, skip=("call-id",), body=SDP), 400, SDP),
    Case("missing-cseq", _req("INVITE", *INVITE_SDP, skip=("cseq",), body=SDP), 400, SDP),
    Case("missing-from", _req("OPTIONS", skip=("from",)), 400),
    Case("missing-to", _req("OPTIONS", skip=("to",)), 400),
    Case("cseq-not-a-number", _req("OPTIONS", cseq="one OPTIONS"), 400),
    Case("cseq-too-large", _req("OPTIONS", cseq="4294967296 OPTIONS"), 400),
    Case("cseq-method-mismatch", _req("INVITE", *INVITE_SDP, cseq="1 OPTIONS", body=SDP), 400, SDP),
    Case("version-7", _req("OPTIONS", version="SIP/7.0"), 505),
    Case("max-forwards-zero", _req("INVITE", *INVITE_SDP, "Max-Forwards: 0", skip=("max-forwards",),
                                   body=SDP), 483, SDP),
    Case("max-forwards-garbage", _req("OPTIONS", "Max-Forwards: many", skip=("max-forwards",)), 400),
    Case("unknown-method", _req("FOOBAR"), 501, wire=False),
    Case("bye-unknown-dialog", _req("BYE", "To: <sip:agent@127.0.0.1>;tag=nosuch{n}", skip=("to",)), 481,
         wire=False),
    Case("bye-outside-dialog", _req("BYE"), 481, wire=False),
    Case("cancel-unknown", _req("CANCEL"), 481, wire=False),
    Case("invalid-sdp", _req("INVITE", *INVITE_SDP, body="this is\r\nnot an SDP\r\n"), 488,
         "this is\r\nnot an SDP\r\n", wire=False),
    Case("sdp-no-audio", _req("INVITE", *INVITE_SDP, body=SDP.replace("m=audio", "m=video")), 488,
         SDP.replace("m=audio", "m=video"), wire=False),
    Case("sdp-only-g729", _req("INVITE", *INVITE_SDP, body=SDP_G729), 488, SDP_G729, wire=False),
    Case("body-not-sdp", _req("INVITE", "Content-Type: text/plain", body="hi"), 415, "hi", wire=False),
    Case("invite-no-contact", _req("INVITE", *INVITE_SDP, skip=("contact",), body=SDP), 400, SDP, wire=False),
    Case("register-not-allowed", _req("REGISTER"), 405, wire=False),
    Case("unterminated-quote", _req("OPTIONS", 'From: "Bob <sip:bob@127.0.0.1>;tag=f{n}', skip=("from",)),
         400),
    Case("empty-call-id", _req("OPTIONS", "Call-ID: ", skip=("call-id",)), 400),
    Case("call-id-with-space", _req("OPTIONS", "Call-ID: two words{n}", skip=("call-id",)), 400),
    Case("duplicate-call-id", _req("OPTIONS", "Call-ID: another-{n}"), 400),
    Case("duplicate-to", _req("OPTIONS", "To: <sip:someone-else@127.0.0.1>"), 400),
    Case("duplicate-cseq", _req("OPTIONS", "CSeq: 2 OPTIONS"), 400),
    Case("max-forwards-300", _req("OPTIONS", "Max-Forwards: 300", skip=("max-forwards",)), 400),
    Case("unknown-request-uri-scheme", _req("OPTIONS", uri="nobodyknows:totally-opaque"), 416),
    # Refused by RFC 3261 §25.1 / RFC 4566 although a lenient parser reads them (issue 10).
    Case("control-char-in-header-value", _req("OPTIONS", "Subject: bell\x07 in the value"), 400),
    Case("nul-in-header-value", _req("OPTIONS", "X-Data: a\x00b"), 400),
    Case("escape-in-display-name",
         _req("OPTIONS", 'From: "Bob\x1b[2J" <sip:caller@127.0.0.1>;tag=f{n}', skip=("from",)), 400),
    Case("bare-cr-in-header-value", _req("OPTIONS", "Subject: half\rline"), 400),
    Case("header-name-with-space", _req("OPTIONS", "Bad Header: x"), 400),
    Case("header-line-without-colon", _req("OPTIONS", "NoColonHere"), 400),
    Case("via-port-out-of-range", _req("OPTIONS", skip=("via",), uri="sip:agent@127.0.0.1:{port}")
         .replace("OPTIONS sip:agent@127.0.0.1:{port} SIP/2.0",
                  "OPTIONS sip:agent@127.0.0.1:{port} SIP/2.0\n"
                  "Via: SIP/2.0/UDP 127.0.0.1:99999;branch=z9hG4bK-vp{n};rport"), 400),
    Case("contact-port-out-of-range", _req("INVITE", *INVITE_SDP, "Contact: <sip:caller@127.0.0.1:70000>",
                                           skip=("contact",), body=SDP), 400, SDP),
    Case("request-uri-port-out-of-range", _req("OPTIONS", uri="sip:agent@127.0.0.1:65536"), 400),
    Case("sdp-media-port-too-big", _req("INVITE", *INVITE_SDP, body=SDP.replace("40000", "70000")), 488,
         SDP.replace("40000", "70000"), wire=False),
    Case("sdp-media-port-negative", _req("INVITE", *INVITE_SDP, body=SDP.replace("40000", "-4")), 488,
         SDP.replace("40000", "-4"), wire=False),
    Case("sdp-c-not-an-address", _req("INVITE", *INVITE_SDP, body=SDP.replace("c=IN IP4 127.0.0.1",
                                                                             "c=IN IP4 999.0.0.1")), 488,
         SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 999.0.0.1"), wire=False),
    Case("sdp-c-type-mismatch", _req("INVITE", *INVITE_SDP, body=SDP.replace("c=IN IP4 127.0.0.1",
                                                                            "c=IN IP4 ::1")), 488,
         SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 ::1"), wire=False),
    Case("sdp-payload-type-too-big", _req("INVITE", *INVITE_SDP, body=SDP.replace("RTP/AVP 0 101",
                                                                                 "RTP/AVP 0 300")), 488,
         SDP.replace("RTP/AVP 0 101", "RTP/AVP 0 300"), wire=False),
    Case("sdp-control-char", _req("INVITE", *INVITE_SDP, body=SDP.replace("s=-", "s=\x01")), 488,
         SDP.replace("s=-", "s=\x01"), wire=False),
    Case("require-unknown-extension", _req("INVITE", *INVITE_SDP, "Require: 100rel, nothingweknow", body=SDP),
         420, SDP, wire=False),
]

# Valid but unusual: answered like their plain forms (OPTIONS -> 200, INVITE -> 200 with SDP).
UNUSUAL: list[Case] = [
    Case("compact-headers", "INVITE sip:agent@127.0.0.1:{port} SIP/2.0\n"
         "v: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-c{n};rport\n"
         "f: <sip:caller@127.0.0.1>;tag=f{n}\nt: <sip:agent@127.0.0.1>\ni: compact-{n}@127.0.0.1\n"
         "CSeq: 1 INVITE\nm: <sip:caller@127.0.0.1:{lport}>\nc: application/sdp\n"
         f"l: {len(SDP)}", 200, SDP),
    Case("folded-headers", "OPTIONS sip:agent@127.0.0.1:{port} SIP/2.0\n"
         "Via: SIP/2.0/UDP 127.0.0.1:{lport}\n  ;branch=z9hG4bK-w{n};rport\n"
         "From: \"Folded\n\t Name\" <sip:caller@127.0.0.1>\n ;tag=f{n}\n"
         "To:\n  <sip:agent@127.0.0.1>\nCall-ID: folded-{n}@127.0.0.1\nCSeq:\n\t1\n OPTIONS\n"
         "Max-Forwards: 70\nSubject: a subject\n  folded over\n\tthree lines\nContent-Length: 0", 200),
    Case("utf8-display-name", "INVITE sip:agent@127.0.0.1:{port} SIP/2.0\n"
         "Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-u{n};rport\n"
         "From: \"Jörg Müller — 日本語\" <sip:caller@127.0.0.1>;tag=f{n}\n"
         "To: \"Ägent ✓\" <sip:agent@127.0.0.1>\nCall-ID: utf8-{n}@127.0.0.1\nCSeq: 1 INVITE\n"
         "Contact: \"Jörg\" <sip:caller@127.0.0.1:{lport}>\nMax-Forwards: 70\n"
         f"Content-Type: application/sdp\nContent-Length: {len(SDP)}", 200, SDP),
    Case("odd-case-and-spacing", "OPTIONS sip:agent@127.0.0.1:{port};transport=udp SIP/2.0\n"
         "vIa   :   SIP/2.0/UDP 127.0.0.1:{lport} ; branch=z9hG4bK-o{n} ; rport\n"
         "FROM:<sip:caller@127.0.0.1>;tag=f{n}\nto : <sip:agent@127.0.0.1>\ncall-ID:odd-{n}\n"
         "cseq :  8   OPTIONS\nX-Unknown-Header: ignored ;with=params\nContent-Length: 0", 200),
    Case("long-header-values", _req("OPTIONS", "Subject: " + "x" * 8000, "X-Long: " + "y" * 20000), 200),
    Case("many-headers", _req("OPTIONS", *[f"X-H{i}: {i}" for i in range(200)]), 200),
    Case("no-content-length-udp", _req("OPTIONS", cl=None), 200),
    Case("body-longer-than-content-length", _req("OPTIONS", cl="0"), 200, "trailing junk ignored"),
    Case("max-forwards-zero-options", _req("OPTIONS", "Max-Forwards: 0", skip=("max-forwards",)), 200),
    Case("escaped-uri-and-params", _req("OPTIONS", uri="sip:ag%65nt@127.0.0.1:{port};lr;foo=bar?x=y"), 200),
    Case("tel-request-uri", _req("OPTIONS", uri="tel:+15551234567;phone-context=example.com"), 200),
    Case("require-what-we-support", _req("OPTIONS", "Require: replaces"), 200),
    Case("proxy-require-ignored", _req("OPTIONS", "Proxy-Require: nobodyknows"), 200),
    Case("escaped-quote-display-name",
         _req("OPTIONS", 'From: "Bob \\"the\\" caller" <sip:c@127.0.0.1>;tag=f{n}', skip=("from",)), 200),
    Case("lf-only-line-ends", "OPTIONS sip:agent@127.0.0.1:{port} SIP/2.0\n"
         "Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-l{n};rport\nFrom: <sip:c@127.0.0.1>;tag=f{n}\n"
         "To: <sip:agent@127.0.0.1>\nCall-ID: lf-{n}\nCSeq: 1 OPTIONS\nContent-Length: 0", 200, crlf=False),
]
