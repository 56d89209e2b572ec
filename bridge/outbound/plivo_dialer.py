"""Placing calls with Plivo's Voice API through the real plivo SDK (``calls.create``).

Plivo then fetches ``answer_url`` (our xml_server), which dials the call into the bridge as for
inbound calls. The SDK has no base-URL option and keeps its API host in module constants; a
subclass rewrites each prepared request instead, so the override stays per client (tests point
it at a local fake, nothing process-wide is patched).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import plivo
import requests
from plivo import exceptions as plivo_errors
from plivo.rest import client as plivo_client

from bridge.callfacts import MAX_VALUE
from bridge.outbound.dialer import PlacementResult
from bridge.privacy import mask_phone_numbers

log = logging.getLogger(__name__)

_PLIVO_API = plivo_client.PLIVO_API  # "https://api.plivo.com"


class _RoutedRestClient(plivo.RestClient):  # type: ignore[misc]
    """RestClient whose requests go to ``api_base`` instead of Plivo's production host."""

    def __init__(self, auth_id: str, auth_token: str, api_base: str, timeout: float) -> None:
        super().__init__(auth_id, auth_token, timeout=timeout)
        self._api_base = api_base.rstrip("/")

    def create_request(self, method: str, path: Any = None, data: Any = None, **kwargs: Any) -> Any:
        prepared = super().create_request(method, path, data, **kwargs)
        for host in {_PLIVO_API, plivo_client.API_VOICE, plivo_client.API_VOICE_FALLBACK_1,
                     plivo_client.API_VOICE_FALLBACK_2}:
            if prepared.url.startswith(host + "/"):
                prepared.url = self._api_base + prepared.url[len(host):]
                break
        return prepared


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    extra = urlencode({k: v for k, v in params.items() if v})
    query = "&".join(q for q in (parts.query, extra) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class PlivoApiDialer:
    name = "plivo-api"

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        answer_url: str,
        *,
        api_base_url: str = "",
        hangup_url: str = "",
        ring_timeout_s: int = 45,
        time_limit_s: int = 3600,
        machine_detection: str = "",
        timeout_s: float = 10.0,
        agent: str = "",
    ) -> None:
        if not answer_url:
            raise ValueError("outbound.answer_url must be set for the plivo-api path")
        if api_base_url:
            self._client: plivo.RestClient = _RoutedRestClient(auth_id, auth_token, api_base_url, timeout_s)
        else:
            self._client = plivo.RestClient(auth_id, auth_token, timeout=timeout_s)
        self.answer_url = answer_url
        self.hangup_url = hangup_url
        self.ring_timeout_s = ring_timeout_s
        self.time_limit_s = time_limit_s
        self.machine_detection = machine_detection
        self.agent = agent
        # The SDK client keeps fallback state on itself (voice_retry_count): one request at a time.
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.session.close()
        self._client.multipart_session.close()

    def _create(self, to_e164: str, from_e164: str, call_id_hint: str) -> Any:
        kwargs: dict[str, Any] = {
            "from_": from_e164,
            "to_": to_e164,
            # vb_call lets the answer URL and the bridge tie Plivo's call to our record.
            "answer_url": with_query(self.answer_url, {"vb_call": call_id_hint, "agent": self.agent}),
            "answer_method": "POST",
            "ring_timeout": self.ring_timeout_s,
            "time_limit": self.time_limit_s,
        }
        if self.hangup_url:
            kwargs["hangup_url"] = with_query(self.hangup_url, {"vb_call": call_id_hint})
            kwargs["hangup_method"] = "POST"
        if self.machine_detection:
            kwargs["machine_detection"] = self.machine_detection
        if call_id_hint.isalnum() and len(call_id_hint) <= MAX_VALUE:
            # Plivo sends only X-PH-<Capital><lowercase/digits> names (support article 360041883871).
            kwargs["sip_headers"] = f"Vbcall={call_id_hint}"
        with self._lock:
            return self._client.calls.create(**kwargs)

    async def place(self, to_e164: str, from_e164: str, call_id_hint: str) -> PlacementResult:
        try:
            response = await asyncio.to_thread(self._create, to_e164, from_e164, call_id_hint)
        except (plivo_errors.ValidationError, plivo_errors.InvalidRequestError,
                plivo_errors.GeoPermissionError, plivo_errors.ForbiddenError) as exc:
            return PlacementResult("rejected", detail=_clean(f"Plivo refused the call: {exc}"))
        except plivo_errors.AuthenticationError as exc:
            return PlacementResult("failed", detail=_clean(f"Plivo authentication failed: {exc}"))
        except (plivo_errors.PlivoRestError, requests.RequestException) as exc:
            return PlacementResult("failed", detail=_clean(f"Plivo API error: {type(exc).__name__}: {exc}"))
        request_uuid = str(getattr(response, "request_uuid", "") or "")
        message = str(getattr(response, "message", "") or "")
        if not request_uuid:
            return PlacementResult("failed", detail=_clean(f"Plivo answered without request_uuid: {message}"))
        return PlacementResult("queued", call_id=request_uuid, detail=_clean(message))


def _clean(text: str) -> str:
    return mask_phone_numbers(text)[:300]
