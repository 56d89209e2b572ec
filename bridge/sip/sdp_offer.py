"""SDP offer/answer for one G.711 audio stream (RFC 3264), plus telephone-event (RFC 4733)."""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

from aiosipua import parse_sdp

from bridge.callmodel import Direction, MediaParams

STATIC_PT = {"PCMU": 0, "PCMA": 8}
_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # SDP text allows none (RFC 4566 §9)
_FLIP: dict[str, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class SdpError(ValueError):
    """The offer cannot be answered: 488 Not Acceptable Here."""


@dataclass(frozen=True, slots=True)
class Offer:
    remote_host: str
    remote_port: int
    codecs: dict[str, int]  # encoding name (upper) -> payload type, in the offer's order
    dtmf_pt: int | None
    direction: Direction  # the remote's direction
    ptime_ms: int


def parse_offer(body: bytes) -> Offer:
    """The audio stream of an SDP offer (or answer). Refused (SdpError) besides the obvious:
    control characters, a media port outside 0-65535 (RFC 4566 §5.14; 0 = stream declined),
    a c= address that is no IP address of its type, RTP payload types outside 0-127."""
    if _CTL.search(body):
        raise SdpError("control character in the SDP")
    try:
        sdp = parse_sdp(body.decode("utf-8"))
    except (ValueError, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise SdpError(f"unparseable SDP: {exc}") from exc
    if any(not 0 <= m.port <= 65535 for m in sdp.media):
        raise SdpError("media port out of range")
    audio = next((m for m in sdp.media if m.media == "audio" and m.port != 0), None)
    if audio is None:
        raise SdpError("no active audio stream in the SDP")
    if audio.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
        raise SdpError(f"unsupported media profile {audio.proto} (no SRTP)")
    conn = audio.connection or sdp.connection
    if conn is None or not conn.address:
        raise SdpError("no c= line")
    _check_address(conn.net_type, conn.addr_type, conn.address)
    codecs: dict[str, int] = {}
    dtmf_pt: int | None = None
    rtpmap = {c.payload_type: c for c in audio.codecs}
    for fmt in audio.formats:
        if not fmt.isdigit() or int(fmt) > 127:
            raise SdpError(f"bad RTP payload type {fmt[:10]!r}")
        pt = int(fmt)
        c = rtpmap.get(pt)
        name = (c.encoding_name.upper() if c else {0: "PCMU", 8: "PCMA"}.get(pt, "")) or ""
        rate = c.clock_rate if c else 8000
        if name in STATIC_PT and rate == 8000 and name not in codecs:
            codecs[name] = pt
        elif name == "TELEPHONE-EVENT" and rate == 8000 and dtmf_pt is None:
            dtmf_pt = pt
    direction = "sendrecv"
    for d in ("sendonly", "recvonly", "inactive", "sendrecv"):
        if d in audio.attributes or d in sdp.attributes:
            direction = d
            break
    host = conn.address.split("/", 1)[0]
    if host == "0.0.0.0":  # RFC 2543 hold
        direction = "inactive" if direction in ("recvonly", "inactive") else "sendonly"
    ptime = 20
    for value in audio.attributes.get("ptime", []):
        if value and value.strip().isdigit():
            ptime = int(value)
    return Offer(host, audio.port, codecs, dtmf_pt, direction, ptime)  # type: ignore[arg-type]


def _check_address(net_type: str, addr_type: str, address: str) -> None:
    """c=IN IP4 <IPv4> or c=IN IP6 <IPv6>: we send RTP to literal addresses only (a host
    name would need a DNS lookup on the media path)."""
    host = address.split("/", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise SdpError(f"c= address {host[:40]!r} is not an IP address") from None
    if net_type.upper() != "IN" or addr_type.upper() != f"IP{ip.version}":
        raise SdpError(f"c= {net_type[:8]} {addr_type[:8]} does not match {host[:40]!r}")


def negotiate(offer: Offer, preference: list[str]) -> MediaParams:
    """Pick our most preferred codec the offer has; mirror its telephone-event PT."""
    for name in preference:
        if name in offer.codecs:
            return MediaParams(
                remote_host=offer.remote_host,
                remote_port=offer.remote_port,
                codec=name,  # type: ignore[arg-type]
                payload_type=offer.codecs[name],
                dtmf_payload_type=offer.dtmf_pt,
                direction=_FLIP[offer.direction],
                ptime_ms=offer.ptime_ms,
            )
    raise SdpError(f"no common codec (offered {list(offer.codecs) or 'none'}, we take {preference})")


class SessionDescription:
    """Our side's SDP for a call: stable o= session id, version bumped on every change."""

    def __init__(self, host: str, port: int, user_agent: str = "voice-bridge") -> None:
        self.host = host
        self.port = port
        self._session_id = str(int(time.time() * 1000))
        self._version = 0
        self._last: bytes | None = None
        self._user = user_agent.replace(" ", "-") or "-"

    def _render(self, pts: list[tuple[int, str]], dtmf_pt: int | None, direction: str) -> bytes:
        fmts = [str(pt) for pt, _ in pts] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
        lines = [
            "v=0",
            f"o={self._user} {self._session_id} {{version}} IN IP4 {self.host}",
            "s=voice-bridge",
            f"c=IN IP4 {self.host}",
            "t=0 0",
            f"m=audio {self.port} RTP/AVP {' '.join(fmts)}",
        ]
        lines += [f"a=rtpmap:{pt} {name}/8000" for pt, name in pts]
        if dtmf_pt is not None:
            lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-16"]
        lines += ["a=ptime:20", f"a={direction}"]
        body = "\r\n".join(lines) + "\r\n"
        # RFC 3264 §8: the version changes only when the description does.
        if self._last is None or self._last != body.encode():
            if self._last is not None:
                self._version += 1
            self._last = body.encode()
        return body.replace("{version}", str(self._version)).encode()

    def answer(self, media: MediaParams) -> bytes:
        return self._render([(media.payload_type, media.codec)], media.dtmf_payload_type, media.direction)

    def offer(self, codecs: list[str], dtmf_pt: int) -> bytes:
        return self._render([(STATIC_PT[c], c) for c in codecs], dtmf_pt, "sendrecv")
