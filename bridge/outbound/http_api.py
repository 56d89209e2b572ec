"""`POST /calls` for applications: JSON in, bearer-token protected, every compliance rule first.

The daemon mounts these routes with ``build_http_app(..., extra_routes=calls_routes(...))``.
Answers: 202 placed, 403 refused (every blocking rule, next allowed time), 400 bad input,
401 bad token, 502 the provider refused/failed, 503 no dialer for the requested path.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from bridge.outbound.service import DialerUnavailable, OutboundService
from bridge.privacy import mask_number

_MAX_BODY = 4096


def calls_routes(
    service: OutboundService, token: str, default_via: str, default_from: str,
    unavailable: dict[str, str] | None = None,
) -> list[web.RouteDef]:
    if not token:
        raise ValueError("POST /calls needs an API token (VOICE_BRIDGE_API_TOKEN)")
    expected = f"Bearer {token}".encode()
    missing = dict(unavailable or {})

    async def create_call(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.content_length is not None and request.content_length > _MAX_BODY:
            return web.json_response({"error": "body too large"}, status=400)
        try:
            body: Any = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("to"), str):
            return web.json_response({"error": 'expected {"to": "NUMBER", "from"?: ..., "via"?: ...}'},
                                     status=400)
        via = body.get("via") or default_via
        from_number = body.get("from") or default_from
        if not isinstance(via, str) or not isinstance(from_number, str):
            return web.json_response({"error": "via and from must be strings"}, status=400)
        if via in missing:
            return web.json_response({"error": missing[via]}, status=503)
        try:
            attempt = await service.call(body["to"], from_number, via)
        except DialerUnavailable as exc:
            return web.json_response({"error": str(exc)}, status=503)
        decision = attempt.decision
        masked = mask_number(decision.to_e164) if decision.to_e164 else None
        if not decision.allowed:
            return web.json_response(
                {
                    "allowed": False,
                    "to": masked,
                    "refusals": [{"rule": r.rule, "detail": r.detail} for r in decision.refusals],
                    "next_allowed": decision.next_allowed.isoformat() if decision.next_allowed else None,
                },
                status=403,
            )
        placement = attempt.placement
        assert placement is not None
        out = {"allowed": True, "to": masked, "status": placement.status, "call_id": placement.call_id,
               "detail": placement.detail}
        return web.json_response(out, status=202 if placement.ok else 502)

    return [web.post("/calls", create_call)]
