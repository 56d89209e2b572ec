"""What the SIP layer asks of the application that owns the calls (the daemon's CallApp)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bridge.callmodel import CallInfo

if TYPE_CHECKING:
    from bridge.sip.call import SipCall


class CallApp(Protocol):
    def admit(self, info: CallInfo) -> tuple[int, str] | None:
        """None to take the call, or (code, reason) to refuse it (e.g. 503 at capacity)."""

    def unavailable(self) -> str | None:
        """Why no new call would be taken now ('draining', 'at capacity'), or None. OPTIONS
        pings answer 503 meanwhile, so a dispatcher stops choosing us before an INVITE."""

    async def prepare(self, call: SipCall) -> tuple[str, int]:
        """Bind media for the call; return the (host, port) to put in our SDP."""

    def established(self, call: SipCall) -> None:
        """ACK received (media known): start media and the agent."""

    def media_changed(self, call: SipCall) -> None:
        """re-INVITE/UPDATE changed remote address, codec or direction."""

    def dtmf(self, call: SipCall, digit: str, duration_ms: int) -> None:
        """A SIP INFO DTMF digit."""

    def ended(self, call: SipCall, reason: str) -> None:
        """The call is over (BYE either way, CANCEL, ACK timeout, ...). Called exactly once."""
