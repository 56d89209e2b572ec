"""[outbound], [compliance] and [privacy] settings (India: TRAI NDNC/DND, DPDPA)."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from bridge.settings.base import Section

_HHMM = re.compile(r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")  # 24:00 = end of day


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
    window_end: str = "21:00"  # exclusive; "24:00" = until midnight
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        ["mon", "tue", "wed", "thu", "fri", "sat"]
    )
    registered_caller_ids: list[str] = Field(default_factory=list)
    # promotional: any DND entry blocks unless the subscriber accepts commercial_category.
    # transactional/service: a DND-listed number is called only with recorded consent.
    call_category: Literal["promotional", "transactional", "service"] = "promotional"
    # TRAI preference category (1-8) of promotional calls; 0 = unspecified (every DND entry blocks).
    commercial_category: int = Field(0, ge=0, le=8)
    # Destination countries (ISO 3166 region codes) that may be called; empty = default_region only.
    allowed_countries: list[str] = Field(default_factory=list)
    # Call categories that need recorded consent for every number (not only DND-listed ones).
    # Plivo's India guidance: "Cold calling is prohibited. You must have explicit digital consent
    # before commercial calls" (https://plivo.com/docs/voice/concepts/india-calling).
    consent_required: list[Literal["promotional", "transactional", "service"]] = Field(["promotional"])
    # Caller-ID number series per category (E.164 prefixes); a category not listed, or with an
    # empty list, accepts any registered caller ID. TRAI defaults: promotional voice calls from
    # the 140 series (TCCCPR 2018); 160 series for service/transactional calls of BFSI and
    # government senders (TRAI/DoT 2025): add "transactional" = ["+91160"] if that applies to you.
    caller_id_series: dict[str, list[str]] = Field(default_factory=lambda: {"promotional": ["+91140"]})

    @field_validator("window_start", "window_end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"expected HH:MM (24 h), got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("allowed_countries")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not re.fullmatch(r"[A-Za-z]{2}", v)]
        if bad:
            raise ValueError(f"expected two-letter region codes (IN, US, ...), got {bad}")
        return [v.upper() for v in value]

    @field_validator("caller_id_series")
    @classmethod
    def _series(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for category, prefixes in value.items():
            if category not in ("promotional", "transactional", "service"):
                raise ValueError(f"unknown call category {category!r} (promotional, transactional, service)")
            bad = [p for p in prefixes if not re.fullmatch(r"\+\d{1,14}", p)]
            if bad:
                raise ValueError(f"{category}: prefixes must be '+' and digits, got {bad}")
        return value

    @field_validator("days")
    @classmethod
    def _some_day(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one calling day is needed")
        return value

    @model_validator(mode="after")
    def _window(self) -> ComplianceSettings:
        if self.window_start >= self.window_end:
            raise ValueError("window_start must be before window_end (same day)")
        return self


class PrivacySettings(Section):
    redact_transcripts: bool = True
    retention_days: int = Field(30, ge=1)


class OutboundSettings(Section):
    via: Literal["plivo-api", "sip-trunk"] = "sip-trunk"
    answer_url: str = ""
    # Plivo REST API base URL; empty = Plivo's production API. Set for a local fake in tests.
    plivo_api_url: str = ""
    hangup_url: str = ""
    ring_timeout_s: int = Field(45, ge=5, le=300)  # plivo-api path (the trunk has its own)
    # Plivo answering-machine detection: "" = off, "true" = report, "hangup" = hang up on machines
    machine_detection: Literal["", "true", "hangup"] = ""
    concurrency: int = Field(5, ge=1)
    calls_per_second: float = Field(2.0, gt=0)
    max_attempts: int = Field(2, ge=1)
    retry_delay_s: float = Field(600.0, ge=0)
    # Outcomes retried (after retry_delay_s, up to max_attempts); the others are final.
    retry_on: list[Literal["busy", "no-answer", "failed", "machine"]] = Field(["busy", "no-answer"])
    # A person contacted (answered, machine, refused) by any campaign within this many days is
    # not dialed by another campaign without --force. 0 turns the check off.
    recontact_window_days: float = Field(30.0, ge=0)
    # Provider unreachable / 5xx: retried after backoff_s, doubling up to backoff_max_s; after
    # max_consecutive_failures in a row the campaign pauses itself (nobody is used up).
    backoff_s: float = Field(2.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    max_consecutive_failures: int = Field(5, ge=1)
    # A campaign call still 'placed' this long after its request left has lost its outcome
    # (hangup callback never arrived, daemon died mid-call): the next run (and a long run every
    # 10 min) looks it up at the provider. Keep it above ring time + the longest call
    # (plivo.time_limit_s, 3600 by default), or live calls are asked about needlessly.
    outcome_timeout_s: float = Field(7200.0, ge=60)
    # Answering machine (plivo-api, machine_detection = "true"): "hangup", or "message" (say
    # machine_message after the beep, then hang up).
    on_machine: Literal["hangup", "message"] = "hangup"
    machine_message: str = ""
    # POST /calls: at most api_calls_per_number requests naming one number per
    # api_number_window_s (429 rate_limited) ...
    api_calls_per_number: int = Field(3, ge=1)
    api_number_window_s: float = Field(3600.0, gt=0)
    # ... and a source that sent api_bad_tokens bad tokens within api_lockout_s is refused
    # (429 locked_out) for api_lockout_s.
    api_bad_tokens: int = Field(10, ge=1)
    api_lockout_s: float = Field(600.0, gt=0)
    trunk: TrunkSettings = Field(default_factory=TrunkSettings)  # type: ignore[arg-type]
