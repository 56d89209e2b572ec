"""The sip-trunk path from the command line: the SIP stack lives in the daemon, so the CLI
asks the daemon's `POST /calls` (bearer token) to place the call. The daemon runs the
compliance gate again before dialing: a second check costs nothing and no path skips it."""

from __future__ import annotations

from typing import get_args

import aiohttp

from bridge.outbound.dialer import PlacementResult, PlacementStatus

_KNOWN: frozenset[str] = frozenset(get_args(PlacementStatus))


class DaemonApiDialer:
    name = "sip-trunk"

    def __init__(self, base_url: str, token: str, timeout_s: float = 120.0) -> None:
        self._url = base_url.rstrip("/") + "/calls"
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def place(self, to_e164: str, from_e164: str, call_id_hint: str) -> PlacementResult:
        body = {"to": to_e164, "from": from_e164, "via": "sip-trunk"}
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as session, session.post(
                self._url, json=body, headers=headers
            ) as resp:
                data = await resp.json(content_type=None)
        except aiohttp.ClientConnectorError as exc:
            # Nothing reached the daemon: safe to retry later.
            return PlacementResult("unavailable", detail=f"daemon API unreachable at {self._url}: {exc}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # The daemon got the request and may be placing the call.
            return PlacementResult("unavailable", maybe_sent=True,
                                   detail=f"daemon API failed at {self._url}: {type(exc).__name__}")
        if resp.status == 503 or (resp.status >= 500 and not isinstance(data, dict)):
            return PlacementResult("unavailable", maybe_sent=resp.status != 503,
                                   detail=f"daemon API answered {resp.status}")
        if not isinstance(data, dict):
            return PlacementResult("failed", detail=f"daemon API answered {resp.status}")
        status = str(data.get("status", ""))
        if resp.status == 403:
            rules = ", ".join(str(r.get("rule")) for r in data.get("refusals", []) if isinstance(r, dict))
            return PlacementResult("rejected", detail=f"refused by the daemon: {rules}")
        if status not in _KNOWN:
            return PlacementResult("failed", detail=str(data.get("error") or f"HTTP {resp.status}"))
        ps: PlacementStatus = status  # type: ignore[assignment]
        return PlacementResult(ps, call_id=str(data.get("call_id", "")), detail=str(data.get("detail", "")))
