"""One SIP call (a dialog, RFC 3261 §12) as the application sees it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bridge.callmodel import CallInfo, MediaParams
from bridge.sip.refer import sipfrag_status
from bridge.sip.sdp_offer import SessionDescription
from bridge.sip.transport import Peer

CallState = Literal["early", "confirmed", "ended"]


class DialogControl(Protocol):
    """What a call asks of the dialog layer (bridge/sip/dialog.py) to end or transfer itself."""

    async def hangup(self, call: SipCall, reason: str) -> None: ...

    async def refer(self, call: SipCall, target: str) -> bool: ...


@dataclass(eq=False)
class SipCall:
    info: CallInfo
    control: DialogControl
    peer: Peer
    local_tag: str
    remote_tag: str
    local_uri: str  # our To header value (without tag)
    remote_uri: str  # the caller's From header value (without tag)
    remote_target: str  # the caller's Contact URI
    route_set: list[str] = field(default_factory=list)
    media: MediaParams | None = None
    sdp: SessionDescription | None = None
    state: CallState = "early"
    local_cseq: int = 0
    remote_cseq: int = 0
    late_offer: bool = False
    invite_branch: str = ""
    pending_hangup: str | None = None
    end_reason: str | None = None
    prepared: bool = False  # the app bound media: it must hear ended()
    late_offer_pending: bool = False  # re-INVITE without SDP: the answer comes in the ACK
    # REFER: the final status the peer's NOTIFYs report for the transferred call
    refer_outcome: asyncio.Future[int] | None = None
    transferred: bool = False  # the peer accepted a transfer: it ends this leg, not us

    @property
    def key(self) -> tuple[str, str]:
        return self.info.call_id, self.local_tag

    async def hangup(self, reason: str = "normal") -> None:
        """End the call from our side (BYE once the dialog is confirmed)."""
        await self.control.hangup(self, reason)

    async def refer(self, target: str) -> bool:
        """Blind transfer (RFC 3515): True once the peer's NOTIFY reports the new call answered."""
        return await self.control.refer(self, target)

    def on_notify(self, event: str | None, body: bytes | str | None) -> None:
        """An in-dialog NOTIFY: a final sipfrag status of our REFER settles refer_outcome."""
        status = sipfrag_status(body)
        if (event or "").split(";")[0].strip().lower() != "refer" or status is None or status < 200:
            return
        if self.refer_outcome is not None and not self.refer_outcome.done():
            self.refer_outcome.set_result(status)
