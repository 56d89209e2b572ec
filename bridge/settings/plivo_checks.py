"""Warnings about a Plivo setup that loads but would not work with a real Plivo account:
printed by `voice-bridge check` (settings are valid; these are deployment mistakes)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from bridge.callfacts import configured_value_problem

if TYPE_CHECKING:
    from bridge.settings import Secrets, Settings


def _only_loopback(cidrs: list[str]) -> bool:
    return all(ipaddress.ip_network(c, strict=False).is_loopback for c in cidrs)


def plivo_warnings(settings: Settings, secrets: Secrets) -> list[str]:
    plivo, trust = settings.plivo, settings.sip.trust
    warnings: list[str] = []
    if plivo.mode == "sip" and not settings.sip.registration.enabled:
        has_trust = not _only_loopback(trust.trusted_cidrs)
        has_auth = bool(trust.inbound_user) and secrets.optional("sip_inbound_password") is not None
        if not has_trust and not has_auth:
            warnings.append(
                "sip.trust: Plivo's INVITEs come from outside 127.0.0.0/8 and no digest user is set: "
                "list Plivo's SIP signalling addresses in sip.trust.trusted_cidrs, or set "
                "sip.trust.inbound_user + VOICE_BRIDGE_SIP_INBOUND_PASSWORD (the XML server then puts "
                "them in <User sipAuthUsername/sipAuthPassword>), or REGISTER (sip.registration)"
            )
    if plivo.validate_signatures and not plivo.public_base_url and not plivo.trusted_proxies:
        warnings.append(
            "plivo.public_base_url: empty and plivo.trusted_proxies is empty: the XML server will "
            "refuse to start (set the public URL Plivo calls, or the proxies to believe)"
        )
    for route in plivo.routes:
        problem = configured_value_problem("agent", route.agent) if route.agent else ""
        if problem:
            warnings.append(f"plivo.routes (to {route.to}): {problem}: the XML server will refuse to start")
    if plivo.validate_signatures and secrets.optional("plivo_auth_token") is None:
        warnings.append("PLIVO_AUTH_TOKEN is not set: webhook and stream signatures cannot be checked")
    if plivo.mode == "stream":
        if secrets.optional("stream_secret") is None and plivo.stream_require_token:
            warnings.append("VOICE_BRIDGE_STREAM_SECRET is not set: stream tokens cannot be signed/checked")
        if plivo.stream_fallback and secrets.optional("plivo_auth_id") is None:
            warnings.append(
                "PLIVO_AUTH_ID is not set: the daemon cannot end or transfer stream calls through "
                "Plivo's REST API, so every call ends with the <Stream> fallback line"
            )
        if plivo.stream_url.startswith("ws://") and "127.0.0.1" not in plivo.stream_url:
            warnings.append("plivo.stream_url: Plivo connects over the internet: use wss:// (TLS proxy)")
    return warnings
