"""SIP message helpers on top of aiosipua's parser: strict checks the parser leaves to us,
response building, identifiers."""

from __future__ import annotations

import re
import secrets

from aiosipua import SipRequest, SipResponse
from aiosipua.headers import Via, parse_via
from aiosipua.message import SipMessage, missing_required_headers

MAX_MESSAGE_BYTES = 65_535
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"  # the methods we accept
_REQUEST_LINE = re.compile(r"^([A-Za-z]+) (\S+) (SIP/\d+\.\d+)$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 (\d{3})(?: (.*))?$")
_CSEQ = re.compile(r"^\s*(\d{1,10})\s+([A-Za-z]+)\s*$")
MAX_CSEQ = 2**31 - 1


class BadMessage(ValueError):
    """A message we must not process. `status` is the response to send (0: drop silently)."""

    def __init__(self, reason: str, status: int = 400, request: SipRequest | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.request = request


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


def parse_message(data: bytes, *, stream: bool = False) -> SipRequest | SipResponse:
    """Parse and validate one message. Raises BadMessage with the status to answer.

    aiosipua's parser is lenient (it keeps short bodies and malformed start lines it can
    split); RFC 3261 wants 400 for those on requests, so the checks live here.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage("message too large", 0)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    first = head.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    is_request = not first.startswith("SIP/")
    if is_request and not _REQUEST_LINE.match(first):
        raise BadMessage(f"malformed request line {first[:60]!r}", 0)
    if not is_request and not _STATUS_LINE.match(first):
        raise BadMessage("malformed status line", 0)
    try:
        msg = SipMessage.parse(data)
    except (ValueError, IndexError, KeyError) as exc:
        raise BadMessage(f"unparseable: {exc}", 0) from exc
    if isinstance(msg, SipResponse):
        _check_common(msg, None)
        return msg
    version = first.rsplit(" ", 1)[-1]
    if not msg.get_header("via"):
        raise BadMessage("no Via", 0)  # nowhere to send a response
    missing = missing_required_headers(msg)
    if missing:
        raise BadMessage(f"missing header(s): {', '.join(missing)}", 400, msg)
    if version != "SIP/2.0":
        raise BadMessage(f"version {version} not supported", 505, msg)
    _check_common(msg, msg)
    _check_request_fields(msg)
    cl = msg.get_header("content-length")
    if cl is None and stream:
        raise BadMessage("no Content-Length on a stream transport", 400, msg)
    if cl is not None:
        try:
            declared = int(cl.strip())
        except ValueError:
            raise BadMessage("bad Content-Length", 400, msg) from None
        if declared < 0 or declared > len(body):
            raise BadMessage("Content-Length larger than the body", 400, msg)
    cseq_method = cseq_of(msg)[1]
    if cseq_method != msg.method and not (msg.method == "ACK" and cseq_method == "ACK"):
        raise BadMessage("CSeq method does not match the request", 400, msg)
    mf = msg.get_header("max-forwards")
    if mf is not None:
        if not mf.strip().isdigit() or int(mf) > 255:  # 1*DIGIT, at most 255 (RFC 4475 §3.1.2.4)
            raise BadMessage("bad Max-Forwards", 400, msg)
        if int(mf) == 0 and msg.method not in ("OPTIONS", "ACK"):
            raise BadMessage("Too Many Hops", 483, msg)
    return msg


_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")
_URI_SCHEMES = ("sip", "sips", "tel")


def _check_request_fields(msg: SipRequest) -> None:
    """What the lenient parser lets through but RFC 3261 (and RFC 4475's torture tests) want
    refused: repeated single-value headers, an empty Call-ID, unbalanced quotes in From/To, and
    a Request-URI scheme we cannot serve (416)."""
    for name in _SINGLE:
        if len(msg.get_header_values(name)) > 1:
            raise BadMessage(f"more than one {name} header", 400, msg)
    call_id = msg.get_header("call-id") or ""
    if not call_id.strip() or any(c.isspace() for c in call_id.strip()):
        raise BadMessage("bad Call-ID", 400, msg)
    for name in ("from", "to"):
        if (msg.get_header(name) or "").replace('\\"', "").count('"') % 2:
            raise BadMessage(f"unterminated quoted string in {name.title()}", 400, msg)
    scheme = msg.uri.split(":", 1)[0].lower() if ":" in msg.uri else ""
    if scheme not in _URI_SCHEMES:
        raise BadMessage(f"Request-URI scheme {scheme[:20]!r} not supported", 416, msg)


def _check_common(msg: SipMessage, request: SipRequest | None) -> None:
    status = 400 if request is not None else 0
    cseq = msg.get_header("cseq")
    if cseq is None or not _CSEQ.match(cseq) or int(_CSEQ.match(cseq).group(1)) > MAX_CSEQ:  # type: ignore[union-attr]
        raise BadMessage("bad CSeq", status, request)
    try:
        vias = msg.via
    except (ValueError, IndexError, KeyError) as exc:
        raise BadMessage(f"bad Via: {exc}", 0) from exc
    if not vias or not vias[0].host:
        raise BadMessage("bad Via", 0)
    for name in ("from", "to"):
        try:
            addr = msg.from_addr if name == "from" else msg.to_addr
        except (ValueError, IndexError, KeyError) as exc:
            raise BadMessage(f"bad {name.title()}: {exc}", status, request) from exc
        if addr is None or not addr.uri.host:
            raise BadMessage(f"bad {name.title()}", status, request)


def cseq_of(msg: SipMessage) -> tuple[int, str]:
    m = _CSEQ.match(msg.get_header("cseq") or "")
    if m is None:
        raise BadMessage("bad CSeq")
    return int(m.group(1)), m.group(2).upper()


def top_via(msg: SipMessage) -> Via:
    value = msg.get_header_values("via")[0]
    return parse_via(value)


def tag_of(header_value: str | None) -> str | None:
    if not header_value:
        return None
    m = re.search(r";\s*tag\s*=\s*([^;>\s,]+)", header_value.split(">", 1)[-1] if ">" in header_value
                  else header_value)
    return m.group(1) if m else None


def new_request(
    method: str,
    uri: str,
    *,
    transport: str,
    host: str,
    port: int,
    branch: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
) -> SipRequest:
    """A request of ours with the headers every request carries (RFC 3261 §8.1.1); Via asks
    for rport so answers come back through NATs."""
    req = SipRequest(method=method, uri=uri)
    req.add_header("Via", f"SIP/2.0/{transport.upper()} {host}:{port};branch={branch};rport")
    req.set_header("Max-Forwards", "70")
    req.set_header("From", from_)
    req.set_header("To", to)
    req.set_header("Call-ID", call_id)
    req.set_header("CSeq", f"{cseq} {method}")
    return req


def build_response(
    request: SipRequest,
    code: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    source: tuple[str, int] | None = None,
) -> SipResponse:
    """A response copying Via/From/To/Call-ID/CSeq from the request (RFC 3261 §8.2.6); with
    `source`, the top Via gets received= and a filled-in rport (RFC 3581). A response that
    creates a dialog also carries the request's Record-Route values (see _creates_dialog)."""
    resp = SipResponse(status_code=code, reason_phrase=reason)
    for i, value in enumerate(request.get_header_values("via")):
        if i == 0 and source is not None:
            value = _stamp_via(value, source)
        resp.add_header("Via", value)
    resp.set_header("From", request.get_header("from") or "")
    to = request.get_header("to") or ""
    if to_tag and tag_of(to) is None and code > 100:
        to = f"{to};tag={to_tag}"
    resp.set_header("To", to)
    resp.set_header("Call-ID", request.get_header("call-id") or "")
    resp.set_header("CSeq", request.get_header("cseq") or "")
    if _creates_dialog(request, code):
        for value in request.get_header_values("record-route"):
            resp.add_header("Record-Route", value)
    for name, value in (headers or {}).items():
        resp.set_header(name, value)
    if body:
        resp.set_header("Content-Type", content_type or "application/sdp")
    resp.body = body
    return resp


def _creates_dialog(request: SipRequest, code: int) -> bool:
    """18x/2xx to an INVITE outside a dialog (no To tag) establishes one: RFC 3261 §12.1.1 says
    the UAS MUST copy every Record-Route value, in order, so the caller's ACK, BYE and re-INVITE
    go through the proxies that asked to stay on the path (otherwise they bypass them)."""
    return (request.method.upper() == "INVITE" and 100 < code < 300
            and tag_of(request.get_header("to")) is None)


def _stamp_via(value: str, source: tuple[str, int]) -> str:
    parts = [p.strip() for p in value.split(";")]
    out = [parts[0]]
    for p in parts[1:]:
        if p == "rport":
            p = f"rport={source[1]}"
        if p.startswith("received="):
            continue
        out.append(p)
    out.append(f"received={source[0]}")
    return ";".join(out)


def response_destination(request: SipRequest, source: tuple[str, int]) -> tuple[str, int]:
    """Where a UDP response goes (RFC 3261 §18.2.2 with RFC 3581 rport): the source address,
    at the source port when rport was asked for, else at the Via port."""
    via = top_via(request)
    if "rport" in via.params:
        return source
    return source[0], via.port or 5060
