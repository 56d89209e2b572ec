"""`POST /calls` for applications: JSON in, bearer-token protected, every compliance rule first.

The daemon mounts these routes with ``build_http_app(..., extra_routes=calls_routes(...))``.
``GET /calls/{call_id}`` (same token) says what became of a call requested with that
``call_id`` (the campaign runner asks after a crash, or when a placed call's outcome is
overdue): 404 never seen, else its decisions and ``in_progress`` (this daemon process is placing
it now; false after a restart: an ``allowed`` call without an outcome was cut off).

Answers: 202 placed, 403 refused (every blocking rule, next allowed time), 400 bad input,
401 bad token, 429 too many calls to this number (rule ``rate_limited``) or this source is
locked out after repeated bad tokens (``locked_out``; Retry-After says for how long), 502 the
provider refused/failed, 503 no dialer for the requested path.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.outbound.api_limits import ApiLimits, SlidingCounter
from bridge.outbound.numbers import InvalidNumber, normalise
from bridge.outbound.service import DialerUnavailable, OutboundService
from bridge.privacy import mask_number

log = logging.getLogger(__name__)
_MAX_BODY = 4096
_CALL_ID = re.compile(r"[A-Za-z0-9]{1,64}")


def _too_many(rule: str, detail: str, retry_after: float) -> web.Response:
    wait = max(1, math.ceil(retry_after))
    return web.json_response(
        {"error": rule, "refusals": [{"rule": rule, "detail": detail}], "retry_after_s": wait},
        status=429, headers={"Retry-After": str(wait)},
    )


def calls_routes(
    service: OutboundService, token: str, default_via: str, default_from: str,
    unavailable: dict[str, str] | None = None, limits: ApiLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[web.RouteDef]:
    if not token:
        raise ValueError("POST /calls needs an API token (VOICE_BRIDGE_API_TOKEN)")
    expected = f"Bearer {token}".encode()
    missing = dict(unavailable or {})
    limits = limits or ApiLimits()
    bad_tokens = SlidingCounter(limits.bad_tokens, limits.lockout_s, clock)
    per_number = SlidingCounter(limits.calls_per_number, limits.number_window_s, clock)
    region = service.gate.settings.default_region
    in_progress: set[str] = set()  # call ids whose POST /calls is being handled by this process

    def refused_access(request: web.Request) -> web.Response | None:
        source = request.remote or "unknown"
        locked = bad_tokens.retry_after(source)
        if locked:  # even a right token waits: the source was guessing
            return _too_many("locked_out", f"too many bad tokens from this source; locked out for "
                             f"{limits.lockout_s:.0f} s", locked)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            bad_tokens.add(source)
            log.warning("%s %s: bad token", request.method, request.path, extra={"remote": source})
            return web.json_response({"error": "unauthorized"}, status=401)
        return None

    async def call_status(request: web.Request) -> web.Response:
        refused = refused_access(request)
        if refused is not None:
            return refused
        call_id = request.match_info["call_id"]
        if not _CALL_ID.fullmatch(call_id):
            return web.json_response({"error": "call_id must be 1-64 letters and digits"}, status=400)
        rows = service.store.decisions_for_call(call_id)
        if not rows:
            return web.json_response({"call_id": call_id, "found": False}, status=404)
        return web.json_response({"call_id": call_id, "found": True, "in_progress": call_id in in_progress,
                                  "decisions": [{"decision": r.decision, "detail": r.detail} for r in rows]})

    async def create_call(request: web.Request) -> web.Response:
        refused = refused_access(request)
        if refused is not None:
            return refused
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
        hint = body.get("call_id") or ""
        if not isinstance(hint, str) or (hint and not _CALL_ID.fullmatch(hint)):
            return web.json_response({"error": "call_id must be 1-64 letters and digits"}, status=400)
        if not isinstance(via, str) or not isinstance(from_number, str):
            return web.json_response({"error": "via and from must be strings"}, status=400)
        if via in missing:
            return web.json_response({"error": missing[via]}, status=503)
        try:
            key = normalise(body["to"], region)
        except InvalidNumber:
            key = ""  # the gate names it (number_invalid); nothing to count
        if key:
            wait = per_number.retry_after(key)
            if wait:
                return _too_many("rate_limited", f"at most {limits.calls_per_number} calls to one number per "
                                 f"{limits.number_window_s:.0f} s", wait)
            per_number.add(key)
        if hint:
            in_progress.add(hint)
        try:
            attempt = await service.call(body["to"], from_number, via, call_id_hint=hint)
        except DialerUnavailable as exc:
            return web.json_response({"error": str(exc)}, status=503)
        finally:
            in_progress.discard(hint)
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

    return [web.post("/calls", create_call), web.get("/calls/{call_id}", call_status)]
