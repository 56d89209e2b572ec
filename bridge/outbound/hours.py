"""Calling window: local hours and days in which outbound calls are allowed (TRAI: 09-21 IST)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hhmm(text: str) -> time:
    if text == "24:00":
        return time.max  # end of day (the end is exclusive)
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


class CallingWindow:
    """Calls are allowed from ``start`` (inclusive) to ``end`` (exclusive) local time on ``days``."""

    def __init__(self, timezone: str, start: str, end: str, days: Iterable[str]) -> None:
        self.tz = ZoneInfo(timezone)
        self.start = _hhmm(start)
        self.end = _hhmm(end)
        if self.start >= self.end:
            raise ValueError("the window must start before it ends")
        self.days = frozenset(DAY_NAMES.index(d) for d in days)
        if not self.days:
            raise ValueError("at least one calling day is needed")

    def _local(self, now: datetime) -> datetime:
        if now.tzinfo is None:
            raise ValueError("the clock must give timezone-aware datetimes")
        return now.astimezone(self.tz)

    def is_open(self, now: datetime) -> bool:
        local = self._local(now)
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def next_open(self, now: datetime) -> datetime:
        """``now`` (in local time) when open, else the next opening time."""
        local = self._local(now)
        if self.is_open(local):
            return local
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opening = datetime.combine(day, self.start, tzinfo=self.tz)
            if opening > local:
                return opening
        raise AssertionError("unreachable: some day of the week is allowed")

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.tz.key} on {days}"
