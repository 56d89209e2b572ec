"""The real plivo SDK (RestClient, calls.create) against the local fake of Plivo's REST API."""

from pathlib import Path

import pytest

from bridge.outbound.plivo_dialer import PlivoApiDialer
from bridge.outbound.service import DialerUnavailable
from bridge.outbound.wiring import open_outbound
from bridge.settings import Secrets
from devkit.fake_plivo_api import FakePlivoApi

from .support import ALICE, CALLER_ID, CAROL, MONDAY_10AM, FakeClock, make_settings

ANSWER = "https://vb.example.com/plivo/answer"


@pytest.fixture
def api():
    with FakePlivoApi() as fake:
        yield fake


def dialer(api: FakePlivoApi, **kwargs) -> PlivoApiDialer:
    return PlivoApiDialer(api.auth_id, api.auth_token, ANSWER, api_base_url=api.base_url, **kwargs)


async def test_create_call_request_body(api: FakePlivoApi) -> None:
    d = dialer(api, hangup_url="https://vb.example.com/plivo/hangup", machine_detection="hangup",
               agent="sales", ring_timeout_s=30, time_limit_s=600)
    result = await d.place(CAROL, CALLER_ID, "abc123")
    d.close()
    assert result.status == "queued" and result.ok
    [req] = api.call_creates()
    assert req.path == f"/v1/Account/{api.auth_id}/Call/"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("plivo-python/")
    body = req.body
    assert body["from"] == CALLER_ID and body["to"] == CAROL
    assert body["answer_url"] == ANSWER + "?vb_call=abc123&agent=sales"
    assert body["answer_method"] == "POST"
    assert body["hangup_url"] == "https://vb.example.com/plivo/hangup?vb_call=abc123"
    assert body["machine_detection"] == "hangup"
    assert body["ring_timeout"] == 30 and body["time_limit"] == 600
    assert body["sip_headers"] == "Vbcall=abc123"
    assert result.call_id in api.calls and api.calls[result.call_id]["to_number"] == CAROL


async def test_machine_detection_off_by_default(api: FakePlivoApi) -> None:
    d = dialer(api)
    await d.place(CAROL, CALLER_ID, "h1")
    d.close()
    body = api.call_creates()[0].body
    assert "machine_detection" not in body
    # Without outbound.hangup_url the outcomes still reach the XML server's /hangup.
    assert body["hangup_url"] == "https://vb.example.com/plivo/hangup?vb_call=h1"


async def test_api_errors_become_results_not_exceptions(api: FakePlivoApi) -> None:
    d = dialer(api)
    api.fail_next(400, "invalid from number")
    rejected = await d.place(CAROL, CALLER_ID, "h1")
    assert rejected.status == "rejected" and "invalid from number" in rejected.detail
    for _ in range(3):  # the SDK retries 5xx on its two fallback hosts
        api.fail_next(500, "internal")
    failed = await d.place(CAROL, CALLER_ID, "h2")
    # 5xx: Plivo may have acted on it, so the campaign asks Plivo before dialing again
    assert failed.status == "unavailable" and failed.maybe_sent and not failed.ok
    d.close()


async def test_wrong_credentials_are_refused_by_the_fake(api: FakePlivoApi) -> None:
    d = PlivoApiDialer(api.auth_id, "wrong-token", ANSWER, api_base_url=api.base_url)
    result = await d.place(CAROL, CALLER_ID, "h1")
    d.close()
    assert result.status == "unavailable" and not result.maybe_sent and "authentication" in result.detail
    assert api.requests[0].status == 401


async def test_unreachable_api_is_a_failed_result() -> None:
    with FakePlivoApi() as api:
        base = api.base_url
        auth = (api.auth_id, api.auth_token)
    d = PlivoApiDialer(*auth, ANSWER, api_base_url=base, timeout_s=2)
    result = await d.place(CAROL, CALLER_ID, "h1")
    d.close()
    assert result.status == "unavailable" and not result.maybe_sent and "ConnectionError" in result.detail


async def test_service_refusal_sends_nothing_to_the_api(api: FakePlivoApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, outbound={"answer_url": ANSWER, "plivo_api_url": api.base_url})
    secrets = Secrets.from_env({"PLIVO_AUTH_ID": api.auth_id, "PLIVO_AUTH_TOKEN": api.auth_token})
    night = FakeClock(MONDAY_10AM.replace(hour=23))
    outbound = open_outbound(settings, secrets, clock=night)
    outbound.registry.import_text("9876543210\n")
    try:
        for to, from_ in [(ALICE, CALLER_ID), (CAROL, "+911149999999"), ("garbage", CALLER_ID),
                          (CAROL, CALLER_ID)]:
            attempt = await outbound.service.call(to, from_, "plivo-api")
            assert not attempt.decision.allowed and attempt.placement is None
        assert api.requests == []  # no API traffic at all
        night.advance(11 * 3600)  # Tuesday 10:00
        attempt = await outbound.service.call(CAROL, CALLER_ID, "plivo-api")
        assert attempt.placed and len(api.call_creates()) == 1
        with pytest.raises(DialerUnavailable):
            await outbound.service.call(CAROL, CALLER_ID, "sip-trunk")
        assert "sip-trunk" in outbound.unavailable
        decisions = [r.decision for r in outbound.store.audit_rows()]
        assert decisions == ["refused"] * 4 + ["allowed", "placed"]
    finally:
        outbound.close()


def test_missing_credentials_or_answer_url_leave_the_path_unavailable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, outbound={"answer_url": ANSWER})
    outbound = open_outbound(settings, Secrets.from_env({}))
    try:
        assert "PLIVO_AUTH_ID" in outbound.unavailable["plivo-api"]
        assert outbound.service.dialers == {}
    finally:
        outbound.close()
    outbound = open_outbound(make_settings(tmp_path), Secrets.from_env({"PLIVO_AUTH_ID": "x",
                                                                          "PLIVO_AUTH_TOKEN": "y"}))
    try:
        assert "answer_url" in outbound.unavailable["plivo-api"]
    finally:
        outbound.close()
