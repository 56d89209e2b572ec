"""How a SIP call is transferred, by how it reached the bridge (Plivo's documentation):

- from Plivo's XML application (<Dial><User>, the call carries X-PH-Calluuid): Plivo does not
  document REFER there, so the caller's leg is moved with the REST API (POST /Call/{uuid}/ to the
  XML server's /transfer URL); Plivo then BYEs the bridge's leg.
- anything else (SIP-trunk calls): REFER with the trunk's domain in Refer-To, success = the
  NOTIFY's final 2xx; the trunk then BYEs the bridge's leg.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from bridge.callfacts import CALL_UUID
from bridge.sip.call import SipCall

log = logging.getLogger(__name__)

# After a transfer the peer ends our leg; if it has not within this long, we do.
TRANSFERRED_BYE_GRACE_S = 10.0


class RestTransfer(Protocol):
    async def transfer(self, call_uuid: str, target: str) -> bool: ...


def transfer_for(call: SipCall, rest: RestTransfer | None) -> Callable[[str], Awaitable[bool]]:
    async def transfer(target: str) -> bool:
        call_uuid = call.info.plivo_headers.get(CALL_UUID, "")
        if call_uuid:
            if rest is None:
                log.warning("transfer of a Plivo XML-app call needs PLIVO_AUTH_ID/PLIVO_AUTH_TOKEN "
                            "(REST API); REFER is not documented for <Dial><User> calls",
                            extra={"call_id": call.info.call_id})
                return False
            ok = await rest.transfer(call_uuid, target)
            call.transferred = call.transferred or ok
            return ok
        return await call.refer(target)

    return transfer
