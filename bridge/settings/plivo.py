"""[plivo] settings: the XML server, the audio-stream leg and the REST client."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bridge.settings.base import Section


class RouteSettings(Section):
    # Calls to this number (E.164, as Plivo sends To) get this agent/prompt.
    to: str
    agent: str = ""
    sip_uri: str = ""


class PlivoSettings(Section):
    mode: Literal["sip", "stream"] = "sip"
    # The public base URL Plivo calls (signatures are computed over it), e.g. https://vb.example.com
    public_base_url: str = ""
    # Off only for local development; a warning is logged at every start when off.
    validate_signatures: bool = True
    sip_uri: str = "sip:agent@127.0.0.1:5060"
    stream_url: str = "wss://127.0.0.1:8080/stream"
    caller_id: str = ""
    dial_timeout_s: int = Field(30, ge=5, le=120)
    time_limit_s: int = Field(3600, ge=60)
    routes: list[RouteSettings] = Field(default_factory=list)
    api_timeout_s: float = Field(10.0, gt=0)
    voice: str = "WOMAN"
    apology_text: str = "Sorry, we cannot take your call right now. Please try again later."
