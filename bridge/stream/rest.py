"""Call control for stream calls through Plivo's REST API (the plivo SDK, run in a thread).

Hang-up: DELETE the call. Transfer: point the call's A leg at the XML server's /transfer URL,
which dials the target. DTMF: Plivo's send-digits on the A leg.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlencode

from bridge.settings import Secrets
from bridge.settings.plivo import PlivoSettings

log = logging.getLogger(__name__)


class PlivoRestControl:
    def __init__(self, settings: PlivoSettings, secrets: Secrets) -> None:
        self._settings = settings
        self._auth_id = secrets.require("plivo_auth_id")
        self._auth_token = secrets.require("plivo_auth_token")
        self._client: Any = None

    def _rest(self) -> Any:
        if self._client is None:
            import plivo

            timeout = self._settings.api_timeout_s
            self._client = plivo.RestClient(self._auth_id, self._auth_token, timeout=timeout)
        return self._client

    async def _call(self, what: str, call_uuid: str, fn: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            await asyncio.to_thread(fn, *args, **kwargs)
            return True
        except Exception as exc:  # SDK raises its own exception tree and requests' errors
            log.warning("Plivo %s failed: %s", what, type(exc).__name__, extra={"call_id": call_uuid})
            return False

    async def hangup(self, call_uuid: str) -> bool:
        return await self._call("hangup", call_uuid, self._rest().calls.delete, call_uuid)

    async def transfer(self, call_uuid: str, target: str) -> bool:
        base = self._settings.public_base_url.rstrip("/")
        if not base:
            log.warning("transfer needs plivo.public_base_url (the XML server's /transfer)",
                        extra={"call_id": call_uuid})
            return False
        url = f"{base}/transfer?{urlencode({'to': target})}"
        return await self._call(
            "transfer", call_uuid, self._rest().calls.transfer, call_uuid,
            legs="aleg", aleg_url=url, aleg_method="POST",
        )

    async def send_digits(self, call_uuid: str, digits: str) -> bool:
        return await self._call("send digits", call_uuid, self._rest().calls.send_digits, call_uuid,
                                digits, leg="aleg")
