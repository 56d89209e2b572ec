"""[outbound], [compliance] and [privacy] settings (India: TRAI NDNC/DND, DPDPA)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bridge.settings.base import Section


class TrunkSettings(Section):
    host: str = ""  # SIP trunk host[:port], e.g. your Zentrunk termination domain
    user: str = ""  # digest user; password VOICE_BRIDGE_TRUNK_PASSWORD
    outbound_proxy: str = ""
    transport: Literal["udp", "tcp"] = "udp"
    ring_timeout_s: float = Field(45.0, gt=0)


class ComplianceSettings(Section):
    default_region: str = "IN"
    timezone: str = "Asia/Kolkata"
    window_start: str = "09:00"
    window_end: str = "21:00"
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        ["mon", "tue", "wed", "thu", "fri", "sat"]
    )
    registered_caller_ids: list[str] = Field(default_factory=list)
    call_category: str = "promotional"


class PrivacySettings(Section):
    redact_transcripts: bool = True
    retention_days: int = Field(30, ge=1)


class OutboundSettings(Section):
    via: Literal["plivo-api", "sip-trunk"] = "sip-trunk"
    answer_url: str = ""
    concurrency: int = Field(5, ge=1)
    calls_per_second: float = Field(2.0, gt=0)
    max_attempts: int = Field(2, ge=1)
    retry_delay_s: float = Field(600.0, ge=0)
    trunk: TrunkSettings = Field(default_factory=TrunkSettings)  # type: ignore[arg-type]
