"""What Plivo would do with an XML document: the first verb the simulator can follow."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


class XmlError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class StreamPlan:
    url: str
    extra_headers: str
    encoding: str  # audio/x-mulaw | audio/x-l16
    bidirectional: bool
    keep_call_alive: bool
    status_url: str


@dataclass(frozen=True, slots=True)
class DialPlan:
    user: str  # sip:...
    sip_headers: dict[str, str]  # name -> value, as Plivo sends them (X-PH-name)
    action_url: str
    timeout_s: int


@dataclass(frozen=True, slots=True)
class SpeakPlan:
    text: str
    hangup: bool


@dataclass(frozen=True, slots=True)
class HangupPlan:
    pass


Plan = StreamPlan | DialPlan | SpeakPlan | HangupPlan


def _headers(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in filter(None, raw.split(",")):
        name, _, value = pair.partition("=")
        out[name.strip()] = value.strip()
    return out


def plan(xml_text: str) -> Plan:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise XmlError(f"not XML: {exc}") from None
    if root.tag != "Response":
        raise XmlError(f"root element is <{root.tag}>, not <Response>")
    children = list(root)
    for i, el in enumerate(children):
        if el.tag == "Stream":
            content_type = el.attrib.get("contentType", "audio/x-l16;rate=8000")
            encoding = content_type.split(";")[0].strip()
            if content_type.replace(" ", "") not in ("audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000"):
                raise XmlError(f"the simulator plays 8 kHz streams only, got {content_type}")
            return StreamPlan(
                url=(el.text or "").strip(),
                extra_headers=el.attrib.get("extraHeaders", ""),
                encoding=encoding,
                bidirectional=el.attrib.get("bidirectional", "false") == "true",
                keep_call_alive=el.attrib.get("keepCallAlive", "false") == "true",
                status_url=el.attrib.get("statusCallbackUrl", ""),
            )
        if el.tag == "Dial":
            users = [u for u in el if u.tag == "User"]
            if not users:
                raise XmlError("<Dial> without <User>: the simulator dials SIP users only")
            headers = _headers(el.attrib.get("sipHeaders", ""))
            headers.update(_headers(users[0].attrib.get("sipHeaders", "")))
            return DialPlan(
                user=(users[0].text or "").strip(),
                sip_headers=headers,
                action_url=el.attrib.get("action", ""),
                timeout_s=int(el.attrib.get("timeout", "30")),
            )
        if el.tag == "Speak":
            rest = [c.tag for c in children[i + 1 :]]
            return SpeakPlan((el.text or "").strip(), hangup="Hangup" in rest or not rest)
        if el.tag == "Hangup":
            return HangupPlan()
    return HangupPlan()  # an empty document: Plivo hangs up
