"""[sip] signalling, [sip.registration] and [sip.trust] settings."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from bridge.settings.base import Section

Codec = Literal["PCMU", "PCMA"]
DigestAlgorithm = Literal["MD5", "SHA-256"]


class RegistrationSettings(Section):
    # REGISTER to a Plivo SIP endpoint (or any registrar). Password: VOICE_BRIDGE_SIP_PASSWORD.
    enabled: bool = False
    registrar: str = "phone.plivo.com"  # host[:port]
    transport: Literal["udp", "tcp"] = "udp"
    user: str = ""
    domain: str = ""  # defaults to the registrar host
    expires_s: int = Field(600, ge=60, le=86400)
    # refresh this many seconds (or this fraction) before expiry, whichever is earlier
    refresh_margin_s: int = Field(30, ge=5)
    retry_min_s: float = Field(2.0, gt=0)
    retry_max_s: float = Field(120.0, gt=0)


class TrustSettings(Section):
    # INVITEs from these networks are accepted without a challenge (Plivo's SIP edge, your PBX).
    trusted_cidrs: list[str] = Field(["127.0.0.0/8"])
    # Inbound digest auth for untrusted sources: user here, password from
    # VOICE_BRIDGE_SIP_INBOUND_PASSWORD. Empty user = untrusted sources get 403.
    inbound_user: str = ""
    realm: str = "voice-bridge"
    # Digest algorithms offered in the 401, in this order (one WWW-Authenticate each); only
    # these are accepted. Default MD5 alone: Plivo and common PBXs/phones answer MD5, and some
    # UAs (baresip 1.0) give up on a 401 that offers SHA-256 at all, even after MD5.
    # ["SHA-256", "MD5"] offers both, the stronger first (RFC 8760), for UAs that cope.
    digest_algorithms: list[DigestAlgorithm] = Field(["MD5"], min_length=1)
    # Per-source flood limit (token bucket) on every request from an untrusted source that is
    # not in one of our dialogs (INVITE, OPTIONS, REGISTER, MESSAGE, BYE, ...).
    rate_per_source: float = Field(10.0, gt=0, description="new requests per second per source IP")
    burst_per_source: int = Field(20, ge=1)
    # Failed digest attempts before a source is locked out (Plivo: 10 in 60 s -> 60 s).
    auth_fail_limit: int = Field(10, ge=1)
    auth_fail_window_s: float = Field(60.0, gt=0)
    lockout_s: float = Field(60.0, gt=0)

    @field_validator("digest_algorithms")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each algorithm at most once")
        return value

    @field_validator("trusted_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a CIDR network: {cidr!r}") from exc
        return value


class SipSettings(Section):
    listen_host: str = "0.0.0.0"
    listen_port: int = Field(5060, ge=0, le=65535)  # 0: any free port (tests)
    transports: list[Literal["udp", "tcp"]] = Field(["udp", "tcp"])
    # Address advertised in SDP c=, Via and Contact when behind NAT (empty: the bound address).
    public_address: str = ""
    user: str = "agent"
    codecs: list[Codec] = Field(["PCMU", "PCMA"], min_length=1)
    user_agent: str = "voice-bridge"
    max_calls: int = Field(200, ge=1)
    retry_after_s: int = Field(5, ge=1)
    # Tear the call down if no ACK arrives for our 2xx within this time. Unset: 64*T1, as
    # RFC 3261 §13.3.1.4 says (32 s at the default T1); set it only to override that.
    ack_timeout_s: float | None = Field(None, gt=0)
    # Ring (180) this long before answering with 200; 0 answers at once. A caller may CANCEL meanwhile.
    answer_delay_ms: int = Field(0, ge=0, le=60_000)
    t1_ms: int = Field(500, ge=50)
    registration: RegistrationSettings = Field(default_factory=RegistrationSettings)  # type: ignore[arg-type]
    trust: TrustSettings = Field(default_factory=TrustSettings)  # type: ignore[arg-type]
