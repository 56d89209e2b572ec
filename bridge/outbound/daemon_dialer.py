"""The sip-trunk path from the command line: the SIP stack lives in the daemon, so the CLI
asks the daemon's `POST /calls` (bearer token) to place the call. The daemon runs the
compliance gate again before dialing: a second check costs nothing and no path skips it.

Our call id goes with the request, so after a crash the campaign asks the daemon
(``GET /calls/{call_id}``) whether it attempted the call and how it ended."""

from __future__ import annotations

from typing import get_args

import aiohttp

from bridge.outbound.dialer import PlacementResult, PlacementStatus, Sought

_KNOWN: frozenset[str] = frozenset(get_args(PlacementStatus))


class DaemonApiDialer:
    name = "sip-trunk"

    def __init__(self, base_url: str, token: str, timeout_s: float = 120.0) -> None:
        self._url = base_url.rstrip("/") + "/calls"
        self._find_timeout = aiohttp.ClientTimeout(total=15)
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def place(self, to_e164: str, from_e164: str, call_id_hint: str) -> PlacementResult:
        body = {"to": to_e164, "from": from_e164, "via": "sip-trunk"}
        if call_id_hint.isalnum():
            body["call_id"] = call_id_hint
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
        if resp.status == 429:  # the daemon's per-number limit or lockout: nothing was dialed
            error = data.get("error", "") if isinstance(data, dict) else ""
            return PlacementResult("unavailable", detail=f"daemon API answered 429 {error}".strip())
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

    async def find_calls(self, wanted: list[Sought]) -> list[PlacementResult | None]:
        """What the daemon did with each call id (raises when it cannot be asked)."""
        headers = {"Authorization": f"Bearer {self._token}"}
        out: list[PlacementResult | None] = []
        async with aiohttp.ClientSession(timeout=self._find_timeout) as session:
            for sought in wanted:
                if not sought.hint.isalnum():
                    raise ValueError("no call id to ask the daemon about")
                async with session.get(f"{self._url}/{sought.hint}", headers=headers) as resp:
                    if resp.status == 404:
                        out.append(None)  # the request never reached the daemon's gate
                        continue
                    data = await resp.json(content_type=None)
                    if resp.status != 200 or not isinstance(data, dict):
                        raise RuntimeError(f"daemon API answered {resp.status}")
                out.append(_from_decisions(data.get("decisions") or [], sought.hint, data.get("in_progress")))
        return out


_FOUND = "found at the daemon after an interrupted run"


def _from_decisions(
    decisions: list[dict[str, str]], hint: str, in_progress: object = None
) -> PlacementResult | None:
    """The daemon's audit rows of one call id as a placement result; ``in_progress`` is the
    daemon's word on whether it is placing the call now (None: a daemon that does not say)."""
    final = [d.get("decision", "") for d in decisions if d.get("decision") != "allowed"]
    if not final:
        if any(d.get("decision") == "allowed" for d in decisions):
            if in_progress is False:  # allowed, no outcome, not running: the daemon stopped mid-call
                return PlacementResult(
                    "lost", call_id=hint,
                    detail="the daemon attempted the call and has no outcome (it restarted mid-call?)")
            return PlacementResult("queued", call_id=hint, detail="in progress at the daemon")
        return None  # refused by the daemon's gate: nothing was dialed
    last = final[-1]
    if last == "placed":  # the trunk path reports after the call: placed = answered
        return PlacementResult("answered", call_id=hint, detail=_FOUND)
    if last in _KNOWN and last not in ("queued", "unavailable", "lost"):
        status: PlacementStatus = last  # type: ignore[assignment]
        return PlacementResult(status, call_id=hint, detail=_FOUND)
    if last == "unavailable":
        return None  # the daemon could not place it: nothing left
    return PlacementResult("failed", call_id=hint, detail=f"the daemon recorded {last!r}")
