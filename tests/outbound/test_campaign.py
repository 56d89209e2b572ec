"""Campaign pacing, concurrency, retries, windows and resume, on a fake clock (no waiting)."""

import asyncio
import itertools
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.outbound.campaign import CallerIdRefused, CampaignOptions, CampaignRunner
from bridge.outbound.campaign_store import CampaignFileError
from bridge.outbound.plivo_dialer import PlivoApiDialer
from bridge.outbound.wiring import Outbound, open_outbound
from devkit.fake_plivo_api import FakePlivoApi

from .support import ALICE, BOB, CALLER_ID, CAROL, MONDAY_10AM, FakeClock, RecordingDialer, make_settings


def numbers(n: int) -> list[str]:
    return [f"+9198{i:08d}" for i in range(n)]


def write_csv(path: Path, rows: list[str], header: str = "name,number") -> Path:
    path.write_text(header + "\n" + "".join(f"person{i},{r}\n" for i, r in enumerate(rows)))
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbound(tmp_path: Path, clock: FakeClock):
    ob = open_outbound(make_settings(tmp_path), clock=clock, dialers={})
    yield ob
    ob.close()


def load(ob: Outbound, path: Path, region: str, name: str = "") -> str:
    return ob.campaigns.load(path, region, name).name


def runner(ob: Outbound, dialer: RecordingDialer, clock: FakeClock, **opts) -> CampaignRunner:
    options = CampaignOptions(from_number=CALLER_ID, **opts)
    return CampaignRunner(ob.campaigns, ob.service, dialer, clock, options)


async def test_calls_per_second_cap_spaces_placements(outbound, clock, tmp_path) -> None:
    report = outbound.campaigns.load(write_csv(tmp_path / "list.csv", numbers(10)), "IN")
    assert report.created and report.added == 10
    cid = report.name
    dialer = RecordingDialer(clock)
    summary = await runner(outbound, dialer, clock, calls_per_second=2.0).run(cid)
    times = [p.at for p in dialer.placed]
    assert len(times) == 10
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.5 - 1e-9 for g in gaps), times
    assert times[-1] == pytest.approx(4.5)  # 10 calls at 2 CPS, no burst
    assert summary.finished and summary.counts == {"answered": 10}


async def test_concurrency_limit_holds(outbound, clock, tmp_path) -> None:
    cid = load(outbound, write_csv(tmp_path / "list.csv", numbers(8)), "IN")
    hold = asyncio.Event()
    dialer = RecordingDialer(clock, hold=hold)
    task = asyncio.create_task(runner(outbound, dialer, clock, concurrency=3, calls_per_second=100).run(cid))
    for _ in range(50):
        await asyncio.sleep(0)
    assert dialer.active == 3 and len(dialer.placed) == 3  # the 4th waits for a free slot
    hold.set()
    summary = await task
    assert dialer.max_active == 3 and len(dialer.placed) == 8
    assert summary.counts == {"answered": 8}


async def test_busy_is_retried_after_the_delay_then_given_up(outbound, clock, tmp_path) -> None:
    cid = load(outbound, write_csv(tmp_path / "list.csv", [ALICE, BOB]), "IN")
    dialer = RecordingDialer(clock, outcomes={ALICE: ["busy", "no-answer", "completed"]})
    summary = await runner(outbound, dialer, clock, max_attempts=2, retry_delay_s=600).run(cid)
    alice_times = [p.at for p in dialer.placed if p.to == ALICE]
    assert len(alice_times) == 2  # max_attempts
    assert alice_times[1] - alice_times[0] >= 600
    assert summary.counts == {"answered": 1, "no-answer": 1}
    [alice] = [r for r in outbound.campaigns.results(cid) if r.line_no == 2]
    assert alice.attempts == 2 and alice.outcome == "no-answer"


async def test_refused_rows_never_reach_the_dialer(outbound, clock, tmp_path) -> None:
    outbound.registry.import_text("9876543210\n")
    outbound.store.add_optout(BOB)
    path = write_csv(tmp_path / "list.csv", [ALICE, BOB, "not-a-number", CAROL, "07012345678"])
    cid = load(outbound, path, "IN")
    dialer = RecordingDialer(clock)
    summary = await runner(outbound, dialer, clock).run(cid)
    assert dialer.numbers() == [CAROL]
    assert summary.counts == {"refused": 2, "bad_line": 2, "answered": 1}
    outcomes = {r.line_no: (r.state, r.outcome) for r in outbound.campaigns.results(cid)}
    assert outcomes[2] == ("refused", "dnd") and outcomes[3] == ("refused", "opted_out")
    assert outcomes[4][0] == "invalid" and outcomes[6] == ("invalid", "duplicate: listed earlier in the file")


async def test_stops_at_window_end_and_resumes_without_calling_anyone_twice(tmp_path) -> None:
    clock = FakeClock(MONDAY_10AM.replace(hour=20, minute=59, second=58))
    ob = open_outbound(make_settings(tmp_path), clock=clock, dialers={})
    try:
        path = write_csv(tmp_path / "list.csv", numbers(10))
        cid = load(ob, path, "IN")
        dialer = RecordingDialer(clock)
        first = await runner(ob, dialer, clock, calls_per_second=1.0).run(cid)
        assert first.paused_until == MONDAY_10AM.replace(hour=9) + timedelta(days=1)
        assert len(dialer.placed) == 2  # 20:59:58 and 20:59:59; 21:00:00 is closed
        clock.t = (first.paused_until - clock.start).total_seconds()  # next morning
        again = ob.campaigns.load(path, "IN")
        assert again.name == cid and not again.created and again.added == 0 and again.known == 10
        second = await runner(ob, dialer, clock, calls_per_second=1.0).run(cid)
        assert second.finished
        assert sorted(dialer.numbers()) == sorted(numbers(10))  # each exactly once
    finally:
        ob.close()


async def test_stop_request_then_resume(outbound, clock, tmp_path) -> None:
    cid = load(outbound, write_csv(tmp_path / "list.csv", numbers(6)), "IN")
    stop = asyncio.Event()
    dialer = RecordingDialer(clock)
    original = dialer.place

    async def place_then_stop(to: str, from_: str, hint: str):
        result = await original(to, from_, hint)
        if len(dialer.placed) == 3:
            stop.set()
        return result

    dialer.place = place_then_stop  # type: ignore[method-assign]
    first = await runner(outbound, dialer, clock, calls_per_second=1.0, concurrency=1).run(cid, stop)
    assert first.stopped and len(dialer.placed) == 3
    dialer.place = original  # type: ignore[method-assign]
    second = await runner(outbound, dialer, clock, calls_per_second=1.0).run(cid)
    assert second.finished and len(dialer.placed) == 6 and len(set(dialer.numbers())) == 6


async def test_crash_before_the_request_left_is_dialed_again(outbound, clock, tmp_path) -> None:
    cid = load(outbound, write_csv(tmp_path / "list.csv", [ALICE, BOB]), "IN")
    row = outbound.campaigns.claim(cid, clock.wall().timestamp(), "h1", 0, False)
    assert row is not None and row.e164 == ALICE  # claimed, then the process died before sending
    dialer = RecordingDialer(clock)
    summary = await runner(outbound, dialer, clock).run(cid)
    assert summary.requeued == 1
    assert sorted(dialer.numbers()) == sorted([ALICE, BOB])
    assert summary.counts == {"answered": 2}


async def test_crash_while_sending_without_a_provider_to_ask_is_not_redialed(outbound, clock, tmp_path):
    cid = load(outbound, write_csv(tmp_path / "list.csv", [ALICE, BOB]), "IN")
    row = outbound.campaigns.claim(cid, clock.wall().timestamp(), "h1", 0, False)
    assert row is not None
    outbound.campaigns.mark_sending(row, clock.wall().timestamp())  # may have left: unknown
    dialer = RecordingDialer(clock)  # cannot list calls
    summary = await runner(outbound, dialer, clock).run(cid)
    assert summary.unknown == 1 and dialer.numbers() == [BOB]
    assert summary.counts == {"unknown": 1, "answered": 1}


async def test_dialer_exception_leaves_the_row_for_reconciliation(outbound, clock, tmp_path) -> None:
    cid = load(outbound, write_csv(tmp_path / "list.csv", [ALICE, BOB]), "IN")

    class Broken(RecordingDialer):
        async def place(self, to_e164, from_e164, call_id_hint):
            raise RuntimeError("boom")

    summary = await runner(outbound, Broken(clock), clock).run(cid)
    assert summary.counts == {"sending": 2}  # may have left: the next run asks the provider
    again = await runner(outbound, RecordingDialer(clock), clock).run(cid)
    assert again.unknown == 2 and again.counts == {"unknown": 2}


async def test_unusable_caller_id_stops_the_campaign_before_any_row(outbound, clock, tmp_path) -> None:
    cid = load(outbound, write_csv(tmp_path / "list.csv", [ALICE, BOB]), "IN")
    dialer = RecordingDialer(clock)
    options = CampaignOptions(from_number="+911149999999")
    with pytest.raises(CallerIdRefused, match="caller_id_unregistered"):
        await CampaignRunner(outbound.campaigns, outbound.service, dialer, clock, options).run(cid)
    assert dialer.placed == [] and outbound.campaigns.counts(cid) == {"queued": 2}


def test_results_csv_masks_numbers(outbound, tmp_path) -> None:
    cid = load(outbound, write_csv(tmp_path / "list.csv", [ALICE, "junk"]), "IN")
    out = tmp_path / "results.csv"
    assert outbound.campaigns.write_results(cid, out) == 2  # one person, one unusable line
    text = out.read_text()
    assert "9876543210" not in text and "+91********10" in text
    assert text.splitlines()[0].startswith("line,number_masked,state,outcome")


def test_campaign_file_errors(outbound, tmp_path) -> None:
    with pytest.raises(CampaignFileError, match="number column"):
        outbound.campaigns.load(write_csv(tmp_path / "a.csv", [ALICE], header="name,city"), "IN")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CampaignFileError, match="empty"):
        outbound.campaigns.load(empty, "IN")
    with pytest.raises(CampaignFileError, match="campaign name"):
        outbound.campaigns.load(write_csv(tmp_path / "b.csv", [ALICE]), "IN", name="a/b")


async def test_campaign_through_the_real_plivo_sdk(outbound, clock, tmp_path) -> None:
    cid = load(outbound, write_csv(tmp_path / "list.csv", numbers(4)), "IN")
    with FakePlivoApi() as api:
        dialer = PlivoApiDialer(api.auth_id, api.auth_token, "https://vb.example.com/answer",
                                api_base_url=api.base_url)
        options = CampaignOptions(from_number=CALLER_ID, calls_per_second=2.0)
        summary = await CampaignRunner(outbound.campaigns, outbound.service, dialer, clock, options).run(cid)
        dialer.close()
        sent = [r.body["to"] for r in api.call_creates()]
    assert sorted(sent) == numbers(4)
    assert summary.counts == {"placed": 4}  # the outcomes come from the hangup callbacks
    assert all(r.call_id for r in outbound.campaigns.results(cid))
