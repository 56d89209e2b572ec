"""What Plivo would do with an XML document: the first verb the simulator can follow."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from bridge.simulator.plivo import rules


class XmlError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class StreamPlan:
    url: str
    extra_headers: str  # as Plivo delivers them in start.extra_headers ("k=v;k=v")
    encoding: str  # audio/x-mulaw | audio/x-l16
    bidirectional: bool
    keep_call_alive: bool
    status_url: str
    content_type: str = "audio/x-l16;rate=8000"
    sample_rate: int = 8000
    # Elements after <Stream>: Plivo runs them once the stream ends (keepCallAlive).
    after: SpeakPlan | HangupPlan | None = None


@dataclass(frozen=True, slots=True)
class DialPlan:
    user: str  # sip:...
    sip_headers: dict[str, str]  # name -> value, as Plivo sends them (X-PH-name): rules applied
    action_url: str
    timeout_s: int
    dropped_headers: tuple[str, ...] = ()  # pairs Plivo would silently not send
    sip_auth_username: str = ""
    sip_auth_password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class SpeakPlan:
    text: str
    hangup: bool


@dataclass(frozen=True, slots=True)
class HangupPlan:
    pass


Plan = StreamPlan | DialPlan | SpeakPlan | HangupPlan


_STREAM_TYPES = {"audio/x-mulaw;rate=8000": 8000, "audio/x-l16;rate=8000": 8000,
                 "audio/x-l16;rate=16000": 16000}


def _rest(children: list[ET.Element]) -> SpeakPlan | HangupPlan | None:
    for i, el in enumerate(children):
        if el.tag == "Speak":
            rest = [c.tag for c in children[i + 1 :]]
            return SpeakPlan((el.text or "").strip(), hangup="Hangup" in rest or not rest)
        if el.tag == "Hangup":
            return HangupPlan()
    return None


def plan(xml_text: str, header_value_limit: int = rules.STRICT_VALUE_LIMIT) -> Plan:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise XmlError(f"not XML: {exc}") from None
    if root.tag != "Response":
        raise XmlError(f"root element is <{root.tag}>, not <Response>")
    children = list(root)
    for i, el in enumerate(children):
        if el.tag == "Stream":
            content_type = el.attrib.get("contentType", "audio/x-l16;rate=8000").replace(" ", "")
            if content_type not in _STREAM_TYPES:
                raise XmlError(f"contentType {content_type!r} is not one Plivo documents")
            try:
                extra = rules.extra_headers_as_delivered(el.attrib.get("extraHeaders", ""))
            except rules.ExtraHeadersError as exc:
                raise XmlError(str(exc)) from None
            return StreamPlan(
                url=(el.text or "").strip(),
                extra_headers=extra,
                encoding=content_type.split(";")[0],
                bidirectional=el.attrib.get("bidirectional", "false") == "true",
                keep_call_alive=el.attrib.get("keepCallAlive", "false") == "true",
                status_url=el.attrib.get("statusCallbackUrl", ""),
                content_type=content_type,
                sample_rate=_STREAM_TYPES[content_type],
                after=_rest(children[i + 1 :]),
            )
        if el.tag == "Dial":
            users = [u for u in el if u.tag == "User"]
            if not users:
                raise XmlError("<Dial> without <User>: the simulator dials SIP users only")
            dial_headers = rules.sip_headers_as_sent(el.attrib.get("sipHeaders", ""), header_value_limit)
            user_headers = rules.sip_headers_as_sent(users[0].attrib.get("sipHeaders", ""),
                                                     header_value_limit)
            return DialPlan(
                user=(users[0].text or "").strip(),
                sip_headers={**dial_headers.sent, **user_headers.sent},
                action_url=el.attrib.get("action", ""),
                timeout_s=int(el.attrib.get("timeout", "30")),
                dropped_headers=dial_headers.dropped + user_headers.dropped,
                sip_auth_username=users[0].attrib.get("sipAuthUsername", ""),
                sip_auth_password=users[0].attrib.get("sipAuthPassword", ""),
            )
        if el.tag == "Speak":
            rest = [c.tag for c in children[i + 1 :]]
            return SpeakPlan((el.text or "").strip(), hangup="Hangup" in rest or not rest)
        if el.tag == "Hangup":
            return HangupPlan()
    return HangupPlan()  # an empty document: Plivo hangs up
