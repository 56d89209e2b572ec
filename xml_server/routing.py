"""Which agent and which bridge address a call goes to, chosen by the number called."""

from __future__ import annotations

from bridge.settings.plivo import PlivoSettings, RouteSettings
from xml_server.responses import CallTarget


def _digits(number: str) -> str:
    # Plivo sends E.164 without "+" ("14155550100"); config may have "+1 415 555 0100".
    return "".join(c for c in number if c.isdigit())


def find_route(settings: PlivoSettings, number: str) -> RouteSettings | None:
    key = _digits(number)
    if not key:
        return None
    for route in settings.routes:
        if _digits(route.to) == key:
            return route
    return None


def call_target(settings: PlivoSettings, route: RouteSettings | None) -> CallTarget:
    return CallTarget(
        mode=settings.mode,
        sip_uri=(route.sip_uri if route and route.sip_uri else settings.sip_uri),
        stream_url=(route.stream_url if route and route.stream_url else settings.stream_url),
    )
