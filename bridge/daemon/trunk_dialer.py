"""The sip-trunk Dialer: outbound calls placed by this daemon's own SIP stack (bridge/sip/uac.py).

It returns once the call is answered (the agent then runs on it like on any inbound call) or
has failed; the compliance gate has already passed it (bridge/outbound/service.py)."""

from __future__ import annotations

from bridge.outbound.dialer import PlacementResult, PlacementStatus
from bridge.settings import Secrets, Settings
from bridge.sip.server import SipServer
from bridge.sip.uac import TrunkCaller


class SipTrunkDialer:
    name = "sip-trunk"

    def __init__(self, server: SipServer, settings: Settings, secrets: Secrets) -> None:
        self._caller = TrunkCaller(
            server,
            settings.outbound.trunk,
            secrets.optional("trunk_password"),
            [str(c) for c in settings.sip.codecs],
            settings.media.dtmf_payload_type,
        )

    async def place(self, to_e164: str, from_e164: str, call_id_hint: str) -> PlacementResult:
        # The hint travels as a header so logs on both sides can be joined (no number in it).
        result = await self._caller.call(to_e164, from_e164, headers={"X-VB-Call": call_id_hint})
        status: PlacementStatus = result.outcome
        call_id = result.call.info.call_id if result.call is not None else ""
        return PlacementResult(status, call_id=call_id, detail=f"{result.code} {result.detail}".strip())
