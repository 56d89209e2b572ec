from datetime import UTC, datetime, timedelta

import pytest

from bridge.outbound.hours import CallingWindow

from .support import IST, MONDAY_10AM

WINDOW = CallingWindow("Asia/Kolkata", "09:00", "21:00", ["mon", "tue", "wed", "thu", "fri", "sat"])


def at(day_offset: int, hour: int, minute: int = 0) -> datetime:
    base = MONDAY_10AM.replace(hour=0, minute=0)
    return base + timedelta(days=day_offset, hours=hour, minutes=minute)


def test_inside_and_boundaries() -> None:
    assert WINDOW.is_open(at(0, 9, 0))  # start is inclusive
    assert WINDOW.is_open(at(0, 20, 59))
    assert not WINDOW.is_open(at(0, 21, 0))  # end is exclusive
    assert not WINDOW.is_open(at(0, 8, 59))


def test_next_open_same_day_and_next_day() -> None:
    assert WINDOW.next_open(at(0, 7, 30)) == at(0, 9)
    assert WINDOW.next_open(at(0, 22, 0)) == at(1, 9)
    assert WINDOW.next_open(at(0, 12, 0)) == at(0, 12)  # open: now


def test_sunday_is_skipped() -> None:
    saturday_night = at(5, 21, 30)
    assert saturday_night.strftime("%a") == "Sat"
    assert not WINDOW.is_open(at(6, 12))  # Sunday noon
    assert WINDOW.next_open(saturday_night) == at(7, 9)  # Monday 09:00


def test_utc_clock_is_converted_to_india_time() -> None:
    # 04:00 UTC = 09:30 IST (open); 16:00 UTC = 21:30 IST (closed)
    assert WINDOW.is_open(datetime(2025, 1, 6, 4, 0, tzinfo=UTC))
    assert not WINDOW.is_open(datetime(2025, 1, 6, 16, 0, tzinfo=UTC))
    nxt = WINDOW.next_open(datetime(2025, 1, 6, 16, 0, tzinfo=UTC))
    assert nxt == datetime(2025, 1, 7, 9, 0, tzinfo=IST)


def test_window_until_midnight() -> None:
    all_day = CallingWindow("Asia/Kolkata", "00:00", "24:00", list(("mon", "tue")))
    assert all_day.is_open(at(0, 23, 59)) and all_day.is_open(at(1, 0, 0))
    assert not all_day.is_open(at(2, 0, 0))
    assert all_day.describe().startswith("00:00-23:59")


def test_configurable_window_and_naive_clock_rejected() -> None:
    evening = CallingWindow("Asia/Kolkata", "10:30", "18:00", ["sun"])
    assert evening.is_open(at(6, 10, 30))
    assert not evening.is_open(at(0, 12))
    assert evening.next_open(at(0, 12)) == at(6, 10, 30)
    with pytest.raises(ValueError):
        WINDOW.is_open(datetime(2025, 1, 6, 10, 0))
    with pytest.raises(ValueError):
        CallingWindow("Asia/Kolkata", "21:00", "09:00", ["mon"])
