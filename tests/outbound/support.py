"""Outbound test helpers: an injected clock, a recording dialer, settings in a temp data dir."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bridge.outbound.dialer import PlacementResult, PlacementStatus
from bridge.settings import Settings

IST = ZoneInfo("Asia/Kolkata")
MONDAY_10AM = datetime(2025, 1, 6, 10, 0, tzinfo=IST)  # 2025-01-06 is a Monday
CALLER_ID = "+911140000000"
# Tests of campaigns, erasure and logging are not about the consent and caller-ID series rules
# (test_compliance.py is): they turn those two off explicitly.
NOT_THE_GATE = {"consent_required": [], "caller_id_series": {}}
TOML_NOT_THE_GATE = 'consent_required = []\ncaller_id_series = {}\n'

# Valid Indian mobile numbers (phonenumbers accepts them).
ALICE = "+919876543210"
BOB = "+919812345678"
CAROL = "+917012345678"


class FakeClock:
    """Virtual time: sleep() advances it at once, so pacing is checked without waiting."""

    def __init__(self, start: datetime = MONDAY_10AM) -> None:
        self.start = start
        self.t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        # Tasks that are ready run before time moves on, as they would in real time.
        for _ in range(5):
            await asyncio.sleep(0)
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)


@dataclass
class Placed:
    to: str
    from_: str
    hint: str
    at: float  # fake-clock time of the placement


@dataclass
class RecordingDialer:
    """A Dialer for campaign tests: records placements, answers from a script per number."""

    clock: FakeClock
    name: str = "test-dialer"
    outcomes: dict[str, list[PlacementStatus]] = field(default_factory=dict)
    hold: asyncio.Event | None = None  # when set, each call waits for it (concurrency tests)
    placed: list[Placed] = field(default_factory=list)
    active: int = 0
    max_active: int = 0

    async def place(self, to_e164: str, from_e164: str, call_id_hint: str) -> PlacementResult:
        self.placed.append(Placed(to_e164, from_e164, call_id_hint, self.clock.monotonic()))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.hold is not None:
                await self.hold.wait()
            script = self.outcomes.get(to_e164)
            status: PlacementStatus = script.pop(0) if script else "completed"
            return PlacementResult(status, call_id=f"call-{len(self.placed)}", duration_s=12.0)
        finally:
            self.active -= 1

    def numbers(self) -> list[str]:
        return [p.to for p in self.placed]


def make_settings(data_dir: Path, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "daemon": {"data_dir": str(data_dir)},
        "compliance": {"registered_caller_ids": [CALLER_ID], **NOT_THE_GATE},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)
