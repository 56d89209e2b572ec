"""Data shared by the SIP layer, the RTP leg and the daemon, with no behaviour of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]


@dataclass(frozen=True, slots=True)
class MediaParams:
    """The negotiated audio stream of a call, as seen from our side."""

    remote_host: str
    remote_port: int
    codec: Literal["PCMU", "PCMA"]
    payload_type: int  # 0 PCMU, 8 PCMA
    dtmf_payload_type: int | None  # telephone-event PT mirrored from the offer; None if absent
    # Direction from OUR point of view: caller put us on hold with a=sendonly -> we "recvonly".
    direction: Direction = "sendrecv"
    ptime_ms: int = 20


@dataclass(slots=True)
class CallInfo:
    """Who is calling whom, for logs, routing and the conversation (numbers unmasked here:
    mask at the point of logging)."""

    call_id: str
    from_uri: str
    to_uri: str
    source: tuple[str, int]
    # X-PH-* headers from Plivo's sipHeaders (name without the X-PH- prefix)
    plivo_headers: dict[str, str] = field(default_factory=dict)
    direction: Literal["inbound", "outbound"] = "inbound"
