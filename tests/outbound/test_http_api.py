"""POST /calls on an aiohttp server bound to 127.0.0.1 (ephemeral port), the real plivo SDK behind."""

import json
from pathlib import Path

import aiohttp
import pytest

from bridge.daemon.http_api import build_http_app, start_http
from bridge.outbound.api_limits import ApiLimits
from bridge.outbound.http_api import calls_routes
from bridge.outbound.plivo_dialer import PlivoApiDialer
from bridge.outbound.wiring import open_outbound
from devkit.fake_plivo_api import FakePlivoApi

from .support import ALICE, BOB, CALLER_ID, CAROL, MONDAY_10AM, FakeClock, make_settings

TOKEN = "t0ken-for-tests"


@pytest.fixture
async def server(tmp_path: Path):
    clock = FakeClock(MONDAY_10AM)
    with FakePlivoApi() as api:
        dialer = PlivoApiDialer(api.auth_id, api.auth_token, "https://vb.example.com/a",
                                api_base_url=api.base_url)
        ob = open_outbound(make_settings(tmp_path), clock=clock, dialers={"plivo-api": dialer})
        ob.registry.import_text(f"{ALICE}\n")
        routes = calls_routes(ob.service, TOKEN, "plivo-api", CALLER_ID,
                              unavailable={"sip-trunk": "the sip-trunk path is not available yet"})
        runner, port = await start_http(build_http_app(lambda: {}, routes), "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
                yield session, api, clock
        finally:
            await runner.cleanup()
            ob.close()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_placed_call_answers_202(server) -> None:
    session, api, _ = server
    async with session.post("/calls", json={"to": "07012345678"}, headers=auth()) as resp:
        assert resp.status == 202
        body = await resp.json()
    assert body["status"] == "queued" and body["to"] == "+91********78"
    assert [r.body["to"] for r in api.call_creates()] == [CAROL]


async def test_refusal_answers_403_with_every_rule(server) -> None:
    session, api, clock = server
    clock.advance(12 * 3600)  # 22:00
    async with session.post("/calls", json={"to": ALICE, "from": "+911149999999"}, headers=auth()) as resp:
        assert resp.status == 403
        body = await resp.json()
    assert [r["rule"] for r in body["refusals"]] == ["caller_id_unregistered", "dnd", "outside_hours"]
    assert body["next_allowed"].startswith("2025-01-07T09:00")
    assert api.requests == []
    metrics = await (await session.get("/metrics")).text()
    assert 'voice_bridge_outbound_decisions_total{decision="refused",rule="dnd",via="plivo-api"}' in metrics
    assert "9876543210" not in metrics


async def test_token_and_input_errors(server) -> None:
    session, api, _ = server
    async with session.post("/calls", json={"to": CAROL}) as resp:
        assert resp.status == 401
    async with session.post("/calls", json={"to": CAROL}, headers=auth("wrong")) as resp:
        assert resp.status == 401
    async with session.post("/calls", data=b"{not json", headers=auth()) as resp:
        assert resp.status == 400
    async with session.post("/calls", json={"number": CAROL}, headers=auth()) as resp:
        assert resp.status == 400
    async with session.post("/calls", json={"to": CAROL, "via": "sip-trunk"}, headers=auth()) as resp:
        assert resp.status == 503 and "not available" in (await resp.json())["error"]
    assert api.requests == []


async def test_provider_failure_answers_502(server) -> None:
    session, api, _ = server
    api.fail_next(400, "caller id not verified")
    async with session.post("/calls", json={"to": CAROL}, headers=auth()) as resp:
        assert resp.status == 502
        assert "caller id not verified" in (await resp.json())["detail"]


def test_a_token_is_required(tmp_path: Path) -> None:
    ob = open_outbound(make_settings(tmp_path), clock=FakeClock(), dialers={})
    try:
        with pytest.raises(ValueError, match="VOICE_BRIDGE_API_TOKEN"):
            calls_routes(ob.service, "", "plivo-api", CALLER_ID)
    finally:
        ob.close()


@pytest.fixture
async def limited(tmp_path: Path):
    """POST /calls with small limits and a clock the test moves."""
    now = [0.0]
    with FakePlivoApi() as api:
        dialer = PlivoApiDialer(api.auth_id, api.auth_token, "https://vb.example.com/a",
                                api_base_url=api.base_url)
        ob = open_outbound(make_settings(tmp_path), clock=FakeClock(MONDAY_10AM),
                           dialers={"plivo-api": dialer})
        limits = ApiLimits(calls_per_number=2, number_window_s=60, bad_tokens=3, lockout_s=300)
        routes = calls_routes(ob.service, TOKEN, "plivo-api", CALLER_ID, limits=limits, clock=lambda: now[0])
        runner, port = await start_http(build_http_app(lambda: {}, routes), "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
                yield session, api, now
        finally:
            await runner.cleanup()
            ob.close()


async def test_repeated_calls_to_one_number_are_rate_limited(limited) -> None:
    session, api, now = limited
    for _ in range(2):
        async with session.post("/calls", json={"to": CAROL}, headers=auth()) as resp:
            assert resp.status == 202
    async with session.post("/calls", json={"to": "07012345678"}, headers=auth()) as resp:  # same person
        body = await resp.json()
        assert resp.status == 429 and body["refusals"][0]["rule"] == "rate_limited"
        assert int(resp.headers["Retry-After"]) == 60 and "7012345678" not in json.dumps(body)
    async with session.post("/calls", json={"to": BOB}, headers=auth()) as resp:
        assert resp.status == 202  # other people are not affected
    now[0] = 61.0
    async with session.post("/calls", json={"to": CAROL}, headers=auth()) as resp:
        assert resp.status == 202
    assert len(api.call_creates()) == 4


async def test_bad_tokens_lock_the_source_out(limited) -> None:
    session, api, now = limited
    for _ in range(3):
        async with session.post("/calls", json={"to": CAROL}, headers=auth("guess")) as resp:
            assert resp.status == 401
    async with session.post("/calls", json={"to": CAROL}, headers=auth()) as resp:  # right token, too late
        assert resp.status == 429 and (await resp.json())["error"] == "locked_out"
        assert 0 < int(resp.headers["Retry-After"]) <= 300
    now[0] = 301.0
    async with session.post("/calls", json={"to": CAROL}, headers=auth()) as resp:
        assert resp.status == 202
    assert len(api.call_creates()) == 1


async def test_a_call_id_given_with_the_request_can_be_looked_up(server) -> None:
    session, api, _ = server
    async with session.post("/calls", json={"to": CAROL, "call_id": "abc123"}, headers=auth()) as resp:
        assert resp.status == 202
    async with session.get("/calls/abc123", headers=auth()) as resp:
        body = await resp.json()
        assert resp.status == 200 and [d["decision"] for d in body["decisions"]] == ["allowed", "placed"]
        assert "provider call" in body["decisions"][1]["detail"]
    async with session.get("/calls/neverseen1", headers=auth()) as resp:
        assert resp.status == 404 and (await resp.json())["found"] is False
    async with session.get("/calls/abc123", headers=auth("wrong")) as resp:
        assert resp.status == 401
    async with session.post("/calls", json={"to": CAROL, "call_id": "not/ok"}, headers=auth()) as resp:
        assert resp.status == 400
    assert len(api.call_creates()) == 1
