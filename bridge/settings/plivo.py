"""[plivo] settings: the XML server, the audio-stream leg and the REST client."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from bridge.settings.base import Section

if TYPE_CHECKING:
    from bridge.settings import Settings


class RouteSettings(Section):
    # Calls to this number (E.164, as Plivo sends To) get this agent/prompt.
    to: str
    agent: str = ""
    sip_uri: str = ""
    stream_url: str = ""  # stream mode: this route's WebSocket URL (empty: plivo.stream_url)


class PlivoSettings(Section):
    mode: Literal["sip", "stream"] = "sip"
    # The public base URL Plivo calls (signatures are computed over it), e.g. https://vb.example.com
    public_base_url: str = ""
    # With public_base_url empty the URL Plivo called is rebuilt from X-Forwarded-Proto/Host/
    # Prefix, honoured only from these proxies (IPs or CIDRs); empty + no public_base_url while
    # signatures are checked: the XML server refuses to start.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Signed-request nonces, shared by every XML-server worker and the daemon (SQLite file).
    # Empty: <daemon.data_dir>/plivo-nonces.sqlite.
    nonce_db: str = ""
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
    # <Dial> to the bridge failed (busy, no answer): "apology" speaks apology_text and hangs up,
    # "voicemail" speaks voicemail_text and records up to voicemail_max_s.
    dial_failed_action: Literal["apology", "voicemail"] = "apology"
    voicemail_text: str = "Please leave a message after the tone."
    voicemail_max_s: int = Field(60, ge=5, le=3600)
    # A signed request whose nonce was already seen within this window is a replay: 403. Plivo's
    # signatures carry no time, so this is how long a captured request stays useless.
    replay_window_s: int = Field(86400, ge=0)
    # --- audio-stream (WebSocket) leg ---
    # audio/x-l16;rate=16000 is wideband on the wire (resampled to the bridge's 8 kHz inside).
    stream_content_type: Literal["audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000",
                                 "audio/x-l16;rate=16000"] = "audio/x-mulaw;rate=8000"
    stream_timeout_s: int = Field(86400, ge=60)
    # Speak apology_text after <Stream>: Plivo runs the next element when the stream ends, so a
    # refused, dropped or unreachable stream ends with words, not silence. The daemon then ends
    # normal calls through the REST API (PLIVO_AUTH_ID/PLIVO_AUTH_TOKEN), or the caller would
    # hear it after every call.
    stream_fallback: bool = True
    # The stream's start must carry an HMAC token (VOICE_BRIDGE_STREAM_SECRET) bound to the call.
    stream_require_token: bool = True
    # The WebSocket upgrade must carry Plivo's V3 signature (PLIVO_AUTH_TOKEN), as Plivo's stream
    # SDKs check it, in addition to the token.
    stream_check_signature: bool = True
    # Agent audio goes out in playAudio messages of up to this much, each followed by a
    # checkpoint: the granularity of "what the caller heard" on this path.
    stream_chunk_ms: int = Field(100, ge=20, le=1000)
    # Keep at most this much audio queued at Plivo ahead of real time (Plivo buffers all it
    # gets; less lead = faster barge-in, more = robust to network jitter).
    stream_lead_ms: int = Field(200, ge=20, le=2000)
    stream_start_timeout_s: float = Field(5.0, gt=0)  # upgrade without a start event: closed
    stream_media_timeout_s: float = Field(30.0, gt=0)  # no media for this long: call over
    stream_max_message_bytes: int = Field(65536, ge=1024)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or CIDR: {item!r}") from None
        return value


def nonce_path(settings: Settings) -> str | None:
    """The signed-request nonce file shared by the XML-server workers and the daemon (None:
    ``nonce_db = ":memory:"``, this process only, for tests and development)."""
    path = settings.plivo.nonce_db or str(Path(settings.daemon.data_dir) / "plivo-nonces.sqlite")
    return None if path == ":memory:" else path
