"""The campaign's two promises under edits, concurrency, outages and crashes: nobody is called
twice, nobody is skipped. Real SQLite, the real plivo SDK against the fake Plivo API."""

import asyncio
import collections
from pathlib import Path

import pytest

from bridge.outbound.campaign import CampaignOptions, CampaignRunner
from bridge.outbound.campaign_lock import CampaignBusy, CampaignLock
from bridge.outbound.db import outbound_dir
from bridge.outbound.plivo_dialer import PlivoApiDialer
from bridge.outbound.wiring import Outbound, open_outbound
from devkit.fake_plivo_api import FakePlivoApi

from .support import CALLER_ID, FakeClock, RecordingDialer, make_settings

ANSWER = "https://vb.example.com/answer"


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"+9198{i:08d}" for i in range(start, start + n)]


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("name,number\n" + "".join(f"p{i},{r}\n" for i, r in enumerate(rows)))
    return path


def runner(ob: Outbound, dialer, clock: FakeClock, **opts) -> CampaignRunner:
    options = CampaignOptions(from_number=CALLER_ID, **opts)
    return CampaignRunner(ob.campaigns, ob.service, dialer, clock, options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ob(tmp_path: Path, clock: FakeClock):
    outbound = open_outbound(make_settings(tmp_path), clock=clock, dialers={})
    yield outbound
    outbound.close()


async def test_rerun_after_adding_a_row_dials_only_the_new_person(ob, clock, tmp_path) -> None:
    path = write_csv(tmp_path / "june.csv", numbers(5))
    report = ob.campaigns.load(path, "IN")
    assert report.name == "june" and report.added == 5  # identity: the file's stem
    dialer = RecordingDialer(clock)
    await runner(ob, dialer, clock, calls_per_second=100).run("june")
    assert sorted(dialer.numbers()) == numbers(5)
    # The operator appends one row (and the file's bytes change, as an Excel re-save does).
    write_csv(path, [*numbers(5), *numbers(1, start=77)])
    again = ob.campaigns.load(path, "IN")
    assert again.name == "june" and not again.created and again.added == 1 and again.known == 5
    await runner(ob, dialer, clock, calls_per_second=100).run("june")
    assert collections.Counter(dialer.numbers()) == collections.Counter(numbers(5) + numbers(1, start=77))
    assert dialer.numbers()[-1] == numbers(1, start=77)[0]


async def test_another_campaign_within_the_window_is_refused_unless_forced(ob, clock, tmp_path) -> None:
    ob.campaigns.load(write_csv(tmp_path / "june.csv", numbers(3)), "IN")
    dialer = RecordingDialer(clock)
    await runner(ob, dialer, clock, calls_per_second=100).run("june")
    ob.campaigns.load(write_csv(tmp_path / "july.csv", numbers(4)), "IN")
    summary = await runner(ob, dialer, clock, calls_per_second=100).run("july")
    assert dialer.numbers()[3:] == numbers(1, start=3)  # only the one june did not reach
    assert summary.counts == {"skipped": 3, "answered": 1}
    skipped = [r for r in ob.campaigns.results("july") if r.state == "skipped"]
    assert all("already contacted by campaign 'june'" in r.detail and "--force" in r.detail for r in skipped)
    # After the window, or with --force, they may be called again.
    ob.campaigns.load(write_csv(tmp_path / "august.csv", numbers(3)), "IN")
    forced = await runner(ob, dialer, clock, calls_per_second=100, force=True).run("august")
    assert forced.counts == {"answered": 3}


def test_one_run_per_campaign_and_a_crashed_run_leaves_no_lock(tmp_path: Path) -> None:
    directory = outbound_dir(tmp_path)
    first = CampaignLock(directory, "june")
    first.acquire()
    with pytest.raises(CampaignBusy, match="already running"):
        CampaignLock(directory, "june").acquire()
    CampaignLock(directory, "july").acquire()  # other campaigns are free
    first.release()  # as the kernel does when the process dies (kill -9 included)
    with CampaignLock(directory, "june"):
        pass


def test_claims_from_two_connections_at_once_never_overlap(tmp_path: Path, clock: FakeClock) -> None:
    """The claim is one UPDATE ... WHERE state='queued': two writers racing on the same list
    (threads, separate connections) never take the same person."""
    import threading

    settings = make_settings(tmp_path)
    stores = [open_outbound(settings, clock=clock, dialers={}) for _ in range(4)]
    try:
        stores[0].campaigns.load(write_csv(tmp_path / "june.csv", numbers(200)), "IN")
        taken: list[list[str]] = [[] for _ in stores]
        start = threading.Barrier(len(stores))

        def grab(i: int) -> None:
            start.wait()
            while (row := stores[i].campaigns.claim("june", 1e12, f"h{i}", 0, False)) is not None:
                taken[i].append(row.e164)

        threads = [threading.Thread(target=grab, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for ob in stores:
            ob.close()
    every = [n for part in taken for n in part]
    assert sorted(every) == numbers(200) and len(set(every)) == 200


async def test_two_campaigns_with_the_same_people_at_once_dial_nobody_twice(tmp_path: Path, clock: FakeClock):
    settings = make_settings(tmp_path)
    a = open_outbound(settings, clock=clock, dialers={})
    b = open_outbound(settings, clock=clock, dialers={})
    try:
        a.campaigns.load(write_csv(tmp_path / "june.csv", numbers(20)), "IN")
        b.campaigns.load(write_csv(tmp_path / "other.csv", numbers(20)), "IN")
        dialer = RecordingDialer(clock)
        await asyncio.gather(
            runner(a, dialer, clock, calls_per_second=1000, concurrency=3).run("june"),
            runner(b, dialer, clock, calls_per_second=1000, concurrency=3).run("other"),
        )
    finally:
        a.close()
        b.close()
    counts = collections.Counter(dialer.numbers())
    assert sorted(counts) == numbers(20) and set(counts.values()) == {1}


async def test_provider_down_then_up_pauses_and_then_dials_everyone(ob, clock, tmp_path) -> None:
    ob.campaigns.load(write_csv(tmp_path / "june.csv", numbers(8)), "IN")
    api = FakePlivoApi().start()
    base, auth = api.base_url, (api.auth_id, api.auth_token)
    api.stop()  # Plivo unreachable: connection refused
    dialer = PlivoApiDialer(*auth, ANSWER, api_base_url=base, timeout_s=2)
    try:
        down = await runner(ob, dialer, clock, calls_per_second=100, concurrency=1,
                            max_consecutive_failures=4).run("june")
        assert "paused after 4 consecutive failures" in down.paused_reason
        assert "unreachable" in down.paused_reason
        assert down.counts == {"queued": 8}  # nobody used up
        assert ob.campaigns.pause_reason("june") == down.paused_reason
        waits = [s for s in clock.sleeps if s >= 1]
        assert waits[:3] == pytest.approx([2.0, 4.0, 8.0], abs=0.1)  # backoff doubles
        api.start()  # back, on the same port
        up = await runner(ob, dialer, clock, calls_per_second=100).run("june")
        assert up.finished and up.counts == {"placed": 8}
        assert sorted(r.body["to"] for r in api.call_creates()) == numbers(8)
    finally:
        dialer.close()
        api.stop()


async def test_5xx_then_restart_asks_plivo_before_dialing_again(ob, clock, tmp_path) -> None:
    """A 5xx may hide a created call: the row waits, and the next run finds the call at Plivo
    (not dialed again) or finds none (dialed)."""
    ob.campaigns.load(write_csv(tmp_path / "june.csv", numbers(2)), "IN")
    with FakePlivoApi() as api:
        created: list[str] = []
        api.on_call = lambda body, uuid: created.append(uuid)
        dialer = PlivoApiDialer(api.auth_id, api.auth_token, ANSWER, api_base_url=api.base_url)
        for _ in range(3):  # first number: 5xx on every host the SDK tries
            api.fail_next(500, "internal")
        first = await runner(ob, dialer, clock, calls_per_second=100, concurrency=1).run("june")
        assert first.counts == {"sending": 1, "placed": 1}
        second = await runner(ob, dialer, clock, calls_per_second=100, concurrency=1).run("june")
        assert second.requeued == 1 and second.counts == {"placed": 2}
        assert sorted(r.body["to"] for r in api.call_creates() if r.status == 201) == numbers(2)
        dialer.close()


async def test_reconciliation_finds_queued_live_and_ended_calls(ob, clock, tmp_path) -> None:
    ob.campaigns.load(write_csv(tmp_path / "june.csv", numbers(4)), "IN")
    with FakePlivoApi() as api:
        dialer = PlivoApiDialer(api.auth_id, api.auth_token, ANSWER, api_base_url=api.base_url)
        # As if a run died right after each request left: rows 'sending', calls at Plivo.
        uuids = []
        for _ in range(3):
            row = ob.campaigns.claim("june", clock.wall().timestamp(), "h", 0, False)
            assert row is not None
            ob.campaigns.mark_sending(row, 0.0)
            result = await dialer.place(row.e164, CALLER_ID, "h")
            uuids.append(result.call_id)
        api.go_live(uuids[1])
        api.end_call(uuids[2], "busy", "Busy Line")
        summary = await runner(ob, dialer, clock, calls_per_second=100, max_attempts=1).run("june")
        dialer.close()
    assert summary.reconciled == 3 and summary.counts == {"placed": 3, "busy": 1}
    assert collections.Counter(r.body["to"] for r in api.call_creates()) == collections.Counter(numbers(4))
