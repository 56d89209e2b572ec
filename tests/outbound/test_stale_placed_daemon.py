"""The sip-trunk path's overdue 'placed' rows: the campaign (CLI side, DaemonApiDialer) asks the
daemon's real `GET /calls/{call_id}` (calls_routes on an aiohttp server on 127.0.0.1). The
daemon's trunk dialer is replaced by one that holds each call until the test lets it end, so
a call can be "still in progress" or cut off by a daemon restart deterministically (the SIP
side of the trunk path is tested against SIPp in tests/trunk)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from bridge.daemon.http_api import build_http_app, start_http
from bridge.outbound.campaign import CampaignOptions, CampaignRunner, CampaignSummary
from bridge.outbound.daemon_dialer import DaemonApiDialer
from bridge.outbound.dialer import PlacementResult, PlacementStatus
from bridge.outbound.http_api import calls_routes
from bridge.outbound.wiring import Outbound, open_outbound
from bridge.privacy import mask_number

from .support import CALLER_ID, FakeClock, make_settings

TOKEN = "daemon-t0ken"
TIMEOUT = 7200.0
ALICE, BOB, CAROL = "+919800000001", "+919800000002", "+919800000003"


@dataclass
class HeldTrunk:
    """Stands in for the daemon's trunk dialer: each call lasts until ``end(number, status)``."""

    name: str = "sip-trunk"
    placed: list[str] = field(default_factory=list)
    _ends: dict[str, asyncio.Future[PlacementStatus]] = field(default_factory=dict)

    def _end_of(self, to: str) -> asyncio.Future[PlacementStatus]:
        return self._ends.setdefault(to, asyncio.get_running_loop().create_future())

    def end(self, to: str, status: PlacementStatus) -> None:
        self._end_of(to).set_result(status)

    async def place(self, to_e164: str, from_e164: str, call_id_hint: str) -> PlacementResult:
        self.placed.append(to_e164)
        status = await asyncio.shield(self._end_of(to_e164))
        self._ends.pop(to_e164, None)  # a later call to the same number is a new call
        return PlacementResult(status, call_id=f"sip-{call_id_hint}")


@dataclass
class Daemon:
    ob: Outbound
    trunk: HeldTrunk
    runners: list[object] = field(default_factory=list)
    posts: list[asyncio.Task[int]] = field(default_factory=list)  # requests the test sent

    async def start(self) -> str:
        """One daemon process's HTTP API (a restart = a new one over the same database)."""
        routes = calls_routes(self.ob.service, TOKEN, "sip-trunk", CALLER_ID)
        runner, port = await start_http(build_http_app(lambda: {}, routes), "127.0.0.1", 0)
        self.runners.append(runner)
        return f"http://127.0.0.1:{port}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def daemon(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Daemon]:
    trunk = HeldTrunk()
    ob = open_outbound(make_settings(tmp_path / "daemon"), clock=clock, dialers={"sip-trunk": trunk})
    d = Daemon(ob, trunk)
    try:
        yield d
    finally:
        for future in trunk._ends.values():  # let held calls finish before the servers go
            if not future.done():
                future.set_result("failed")
        await asyncio.gather(*d.posts, return_exceptions=True)
        for runner in d.runners:
            await runner.cleanup()  # type: ignore[attr-defined]
        ob.close()


@pytest.fixture
def cli(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Outbound]:
    ob = open_outbound(make_settings(tmp_path / "cli"), clock=clock, dialers={})
    path = tmp_path / "june.csv"
    path.write_text("number\n" + "".join(f"{p}\n" for p in (ALICE, BOB, CAROL)))
    ob.campaigns.load(path, "IN")
    yield ob  # type: ignore[misc]
    ob.close()


async def run(cli: Outbound, base_url: str, clock: FakeClock) -> CampaignSummary:
    options = CampaignOptions(from_number=CALLER_ID, calls_per_second=100, outcome_timeout_s=TIMEOUT,
                              retry_delay_s=60, max_attempts=2)
    dialer = DaemonApiDialer(base_url, TOKEN)
    return await CampaignRunner(cli.campaigns, cli.service, dialer, clock, options).run("june")


async def _post(base_url: str, to: str, call_id: str) -> int:
    async with aiohttp.ClientSession() as session, session.post(
        f"{base_url}/calls", json={"to": to, "call_id": call_id}, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        return resp.status


async def interrupted_run(
    daemon: Daemon, cli: Outbound, base_url: str, clock: FakeClock
) -> list[asyncio.Task[int]]:
    """A run that died with every request sent: rows 'sending', the daemon holding each call."""
    posts: list[asyncio.Task[int]] = []
    for i in range(3):
        row = cli.campaigns.claim("june", clock.wall().timestamp(), f"h{i}", 0, False)
        assert row is not None
        cli.campaigns.mark_sending(row, clock.wall().timestamp())
        posts.append(asyncio.create_task(_post(base_url, row.e164, row.hint)))
    daemon.posts.extend(posts)
    for _ in range(500):  # bounded wait until the daemon holds all three calls
        if len(daemon.trunk.placed) >= 3:
            return posts
        await asyncio.sleep(0.01)
    raise AssertionError(f"the daemon placed {daemon.trunk.placed}")


def state(cli: Outbound, e164: str) -> tuple[str, str, int, str]:
    (r,) = [r for r in cli.campaigns.results("june") if r.masked == mask_number(e164)]
    return r.state, r.outcome, r.attempts, r.detail


async def test_overdue_trunk_calls_ended_and_live(daemon: Daemon, cli: Outbound, clock: FakeClock) -> None:
    url = await daemon.start()
    posts = await interrupted_run(daemon, cli, url, clock)
    recovered = await run(cli, url, clock)  # the daemon says all three are in progress
    assert recovered.reconciled == 3 and recovered.counts == {"placed": 3} and recovered.dialed == 0
    daemon.trunk.end(ALICE, "busy")  # the daemon recorded busy; nobody told the campaign
    daemon.trunk.end(CAROL, "answered")
    await asyncio.gather(posts[0], posts[2])
    clock.advance(TIMEOUT + 1)
    daemon.trunk.end(ALICE, "busy")  # Alice's retry: busy again (final: 2 of 2 attempts)
    overdue = await run(cli, url, clock)
    assert overdue.stale_settled == 2 and overdue.stale_live == 1 and overdue.dialed == 1
    assert state(cli, ALICE)[:3] == ("busy", "busy", 2)
    assert state(cli, CAROL)[:3] == ("answered", "answered", 1)
    bob = state(cli, BOB)
    assert bob[0] == "placed" and "still in progress at the daemon" in bob[3]
    assert collections.Counter(daemon.trunk.placed) == {ALICE: 2, BOB: 1, CAROL: 1}
    daemon.trunk.end(BOB, "no-answer")
    await posts[1]


async def test_daemon_restarted_mid_call_is_unknown_not_redialed(daemon: Daemon, cli: Outbound,
                                                                  clock: FakeClock) -> None:
    old = await daemon.start()
    posts = await interrupted_run(daemon, cli, old, clock)
    assert (await run(cli, old, clock)).reconciled == 3
    daemon.trunk.end(ALICE, "busy")
    await posts[0]
    # The daemon restarts: a new process over the same audit database. Bob's and Carol's calls
    # were cut off; their audit rows say "allowed" with no outcome.
    new = await daemon.start()
    cli.campaigns.conn.execute("UPDATE campaign_person SET hint='neverseen9' WHERE number=?",
                               (int(CAROL[1:]),))  # and Carol's call id is one the daemon never saw
    clock.advance(TIMEOUT + 1)
    daemon.trunk.end(ALICE, "answered")  # Alice's retry
    after = await run(cli, new, clock)
    assert after.stale_settled == 1 and after.stale_unknown == 2 and after.dialed == 1
    assert state(cli, ALICE)[:3] == ("answered", "answered", 2)
    bob, carol = state(cli, BOB), state(cli, CAROL)
    assert bob[:3] == ("unknown", "unknown", 1) and "restarted mid-call" in bob[3], bob
    assert carol[:3] == ("unknown", "unknown", 1) and "no record of the call" in carol[3], carol
    assert collections.Counter(daemon.trunk.placed) == {ALICE: 2, BOB: 1, CAROL: 1}
    assert (await run(cli, new, clock)).dialed == 0
