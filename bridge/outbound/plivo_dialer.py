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
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import plivo
import requests
from plivo import exceptions as plivo_errors
from plivo.rest import client as plivo_client

from bridge.callfacts import MAX_VALUE
from bridge.outbound.dialer import PlacementResult, PlacementStatus, Sought
from bridge.outbound.outcomes import outcome_from_plivo
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
        # Plivo posts the hangup to answer_url when no hangup_url is given; our XML server
        # takes outcomes on /hangup, next to /answer.
        if not hangup_url and urlsplit(answer_url).path.endswith("/answer"):
            parts = urlsplit(answer_url)
            hangup_url = urlunsplit(parts._replace(path=parts.path[: -len("answer")] + "hangup"))
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
            # The SDK never resets its 5xx fallback counter; one bad minute would stick.
            self._client.voice_retry_count = 0
            return self._client.calls.create(**kwargs)

    async def place(self, to_e164: str, from_e164: str, call_id_hint: str) -> PlacementResult:
        try:
            response = await asyncio.to_thread(self._create, to_e164, from_e164, call_id_hint)
        except (plivo_errors.ValidationError, plivo_errors.InvalidRequestError,
                plivo_errors.GeoPermissionError, plivo_errors.ForbiddenError) as exc:
            return PlacementResult("rejected", detail=_clean(f"Plivo refused the call: {exc}"))
        except plivo_errors.AuthenticationError as exc:
            # Nothing was placed and nothing will be until the credentials are fixed.
            return PlacementResult("unavailable", detail=_clean(f"Plivo authentication failed: {exc}"))
        except requests.ConnectionError as exc:
            # Refused/unreachable: the request did not get to Plivo (a read timeout is not this).
            return PlacementResult("unavailable",
                                   detail=_clean(f"Plivo API unreachable: {type(exc).__name__}"))
        except (plivo_errors.PlivoRestError, requests.RequestException) as exc:
            # 5xx or a timeout after sending: Plivo may have created the call.
            return PlacementResult("unavailable", maybe_sent=True,
                                   detail=_clean(f"Plivo API error: {type(exc).__name__}: {exc}"))
        request_uuid = str(getattr(response, "request_uuid", "") or "")
        message = str(getattr(response, "message", "") or "")
        if not request_uuid:
            return PlacementResult("unavailable", maybe_sent=True,
                                   detail=_clean(f"Plivo answered without request_uuid: {message}"))
        return PlacementResult("queued", call_id=request_uuid, detail=_clean(message))

    # reconciliation ---------------------------------------------------------------------------
    def _find(self, wanted: list[Sought]) -> list[PlacementResult | None]:
        client = self._client
        out: list[PlacementResult | None] = []
        with self._lock:
            client.voice_retry_count = 0
            # Queued and live calls are not in the call records yet (Plivo lists them apart):
            # one listing for every row asked about.
            pending: dict[str, PlacementResult] = {}  # by to-number digits
            by_uuid: dict[str, PlacementResult] = {}  # by request_uuid / call_uuid
            for kind, status in ((client.queued_calls, "queued"), (client.live_calls, "live")):
                for call_id in _all_ids(kind):
                    detail = kind.get(call_id)
                    found = str(getattr(detail, "request_uuid", "") or call_id)
                    result = PlacementResult("queued", call_id=found, detail=f"{status} at Plivo")
                    pending.setdefault(_digits(getattr(detail, "to", "")), result)
                    by_uuid[found] = by_uuid[call_id] = result
            for sought in wanted:
                digits = sought.to_e164.lstrip("+")
                # A placed call is known by its request_uuid while queued/live; call records do
                # not carry it, and a request that may have left has no id: by number and time.
                out.append(by_uuid.get(sought.call_id) or pending.get(digits)
                           or self._ended_call(digits, sought.since_epoch))
        return out

    def _ended_call(self, digits: str, since_epoch: float) -> PlacementResult | None:
        offset = 0
        while True:  # call records, newest first: stop at the first page older than since
            page = list(self._client.calls.list(to_number=digits, limit=_PAGE, offset=offset))
            for cdr in page:
                started = _when(str(getattr(cdr, "initiation_time", "") or ""))
                if started is None or started < since_epoch:
                    continue
                outcome = outcome_from_plivo(
                    "", str(getattr(cdr, "hangup_cause_name", "") or ""),
                    str(getattr(cdr, "bill_duration", "") or "0"),
                )
                status: PlacementStatus = outcome  # type: ignore[assignment]
                return PlacementResult(status, call_id=str(getattr(cdr, "call_uuid", "")),
                                       detail="Plivo call record")
            oldest = min((_when(str(getattr(c, "initiation_time", "") or "")) or 0.0 for c in page),
                         default=0.0)
            if len(page) < _PAGE or oldest < since_epoch:
                return None
            offset += _PAGE

    async def find_calls(self, wanted: list[Sought]) -> list[PlacementResult | None]:
        return await asyncio.to_thread(self._find, wanted)


_PAGE = 20  # Plivo's largest page


def _all_ids(kind: Any) -> list[str]:
    """Every id of a queued/live call listing, page by page."""
    ids: list[str] = []
    while True:
        page = [str(i) for i in (getattr(kind.list_ids(limit=_PAGE, offset=len(ids)), "calls", None) or [])]
        ids.extend(page)
        if len(page) < _PAGE:
            return ids


def _digits(text: object) -> str:
    return "".join(c for c in str(text) if c.isdigit())


def _when(text: str) -> float | None:
    """Plivo's record times ("2026-12-01 16:40:00+05:30") as epoch seconds."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _clean(text: str) -> str:
    return mask_phone_numbers(text)[:300]
