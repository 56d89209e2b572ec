"""Campaign rows left 'placed' without an outcome (the hangup callback never came) are looked up
at the provider once they are older than outcome_timeout_s: the real plivo SDK against the fake
Plivo API, real SQLite. No XML server runs here, so no callback ever arrives: every outcome
the runner records comes from Plivo's call lists and call records."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from bridge.outbound.campaign import CampaignOptions, CampaignRunner, CampaignSummary
from bridge.outbound.campaign_store import ResultRow
from bridge.outbound.plivo_dialer import PlivoApiDialer
from bridge.outbound.wiring import Outbound, open_outbound
from bridge.privacy import mask_number
from devkit.fake_plivo_api import FakePlivoApi

from .support import CALLER_ID, FakeClock, make_settings

ANSWER = "https://vb.example.com/answer"
TIMEOUT = 7200.0
ALICE, BOB, CAROL = "+919800000001", "+919800000002", "+919800000003"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ob(tmp_path: Path, clock: FakeClock):
    outbound = open_outbound(make_settings(tmp_path), clock=clock, dialers={})
    yield outbound
    outbound.close()


def load(ob: Outbound, tmp_path: Path, people: list[str]) -> None:
    path = tmp_path / "june.csv"
    path.write_text("number\n" + "".join(f"{p}\n" for p in people))
    ob.campaigns.load(path, "IN")


async def run(ob: Outbound, api: FakePlivoApi, clock: FakeClock, base_url: str = "",
              **opts: object) -> CampaignSummary:
    dialer = PlivoApiDialer(api.auth_id, api.auth_token, ANSWER, api_base_url=base_url or api.base_url)
    options = CampaignOptions(from_number=CALLER_ID, calls_per_second=100, outcome_timeout_s=TIMEOUT,
                              retry_delay_s=60, **opts)  # type: ignore[arg-type]
    try:
        return await CampaignRunner(ob.campaigns, ob.service, dialer, clock, options).run("june")
    finally:
        dialer.close()


def uuid_of(api: FakePlivoApi, e164: str) -> str:
    """The request_uuid of the newest call the fake API took for this number."""
    return [u for u, c in api.calls.items() if c["to_number"].lstrip("+") == e164.lstrip("+")][-1]


def row(ob: Outbound, e164: str) -> ResultRow:
    (found,) = [r for r in ob.campaigns.results("june") if r.masked == mask_number(e164)]
    return found


def creates(api: FakePlivoApi) -> collections.Counter[str]:
    return collections.Counter(r.body["to"] for r in api.call_creates())


async def test_lost_hangup_callback_busy_is_learned_and_retried(ob, clock, tmp_path) -> None:
    load(ob, tmp_path, [ALICE, BOB])
    with FakePlivoApi() as api:
        first = await run(ob, api, clock, max_attempts=2)
        assert first.counts == {"placed": 2}
        # Plivo ended both calls; the hangup callbacks never reached us.
        api.end_call(uuid_of(api, ALICE), "busy", "Busy Line")
        api.end_call(uuid_of(api, BOB), "completed", "Normal Hangup", bill_duration=42)
        clock.advance(TIMEOUT - 60)
        early = await run(ob, api, clock, max_attempts=2)  # not overdue yet: nobody is asked about
        assert early.stale_settled == 0 and early.counts == {"placed": 2} and early.dialed == 0
        clock.advance(120)
        second = await run(ob, api, clock, max_attempts=2)
    assert second.stale_settled == 2 and second.stale_unknown == 0
    assert second.dialed == 1  # Alice: busy -> retried per policy (retry_on busy, 1 of 2 attempts)
    assert creates(api) == {ALICE: 2, BOB: 1}
    assert second.counts == {"placed": 1, "answered": 1}
    bob = row(ob, BOB)
    assert bob.outcome == "answered" and bob.attempts == 1
    assert "none was reported" in bob.detail and "after placing" in bob.detail


async def test_busy_without_attempts_left_is_final(ob, clock, tmp_path) -> None:
    load(ob, tmp_path, [ALICE])
    with FakePlivoApi() as api:
        await run(ob, api, clock, max_attempts=1)
        api.end_call(uuid_of(api, ALICE), "busy", "Busy Line")
        clock.advance(TIMEOUT + 1)
        second = await run(ob, api, clock, max_attempts=1)
    assert second.counts == {"busy": 1} and second.stale_settled == 1 and second.dialed == 0
    assert creates(api) == {ALICE: 1}


async def test_still_live_call_is_left_alone(ob, clock, tmp_path) -> None:
    load(ob, tmp_path, [ALICE, BOB])
    with FakePlivoApi() as api:
        await run(ob, api, clock)
        api.go_live(uuid_of(api, ALICE))  # a very long call: Plivo still has it live
        # Bob's call is still queued at Plivo (never picked up by the carrier yet).
        clock.advance(TIMEOUT + 1)
        second = await run(ob, api, clock)
        third = await run(ob, api, clock)  # asked again next time, still left
    for summary in (second, third):
        assert summary.stale_live == 2 and summary.stale_settled == 0 and summary.stale_unknown == 0
        assert summary.counts == {"placed": 2} and summary.dialed == 0
    assert creates(api) == {ALICE: 1, BOB: 1}
    assert "still live at Plivo" in row(ob, ALICE).detail
    assert "still queued at Plivo" in row(ob, BOB).detail


async def test_call_plivo_does_not_know_is_marked_unknown_and_not_redialed(ob, clock, tmp_path) -> None:
    load(ob, tmp_path, [ALICE])
    with FakePlivoApi() as first_account:
        await run(ob, first_account, clock)
    clock.advance(TIMEOUT + 1)
    # Asked at a Plivo account that has no record of the call (no queued/live call, no CDR).
    with FakePlivoApi() as api:
        second = await run(ob, api, clock)
        third = await run(ob, api, clock)
    assert second.stale_unknown == 1 and second.counts == {"unknown": 1} and second.dialed == 0
    assert third.stale_unknown == 0 and third.dialed == 0  # final: never asked or dialed again
    assert api.call_creates() == []
    alice = row(ob, ALICE)
    assert alice.state == "unknown" and alice.attempts == 1
    assert "no record of the call" in alice.detail and "not redialed" in alice.detail


async def test_provider_unreachable_leaves_the_row_placed_for_the_next_check(ob, clock, tmp_path) -> None:
    load(ob, tmp_path, [ALICE])
    with FakePlivoApi() as api:
        await run(ob, api, clock, max_attempts=1)
        api.end_call(uuid_of(api, ALICE), "no-answer", "No Answer")
        clock.advance(TIMEOUT + 1)
        base_url = api.base_url  # the fake keeps its port across stop()/start()
        api.stop()
        down = await run(ob, api, clock, base_url, max_attempts=1)
        api.start()
        up = await run(ob, api, clock, max_attempts=1)
    assert down.stale_unchecked == 1 and down.counts == {"placed": 1}
    assert up.stale_settled == 1 and up.counts == {"no-answer": 1}
    assert creates(api) == {ALICE: 1}


async def test_a_long_run_settles_overdue_calls_while_it_runs(ob, clock, tmp_path) -> None:
    load(ob, tmp_path, [ALICE, BOB])
    with FakePlivoApi() as api:
        await run(ob, api, clock, max_attempts=1)
        api.end_call(uuid_of(api, ALICE), "busy", "Busy Line")
        # Carol joins with a retry scheduled 3 h out, so the next run keeps going that long.
        load(ob, tmp_path, [ALICE, BOB, CAROL])
        ob.campaigns.conn.execute("UPDATE campaign_person SET next_at=? WHERE number=?",
                                  (clock.wall().timestamp() + 3 * 3600, int(CAROL[1:])))
        long_run = await run(ob, api, clock, max_attempts=1)
    # At the start nothing was overdue; after sleeping until Carol was due, Alice's call was.
    assert long_run.stale_settled == 1 and long_run.dialed == 1
    assert long_run.counts == {"busy": 1, "placed": 2}
    assert creates(api) == {ALICE: 1, BOB: 1, CAROL: 1}
