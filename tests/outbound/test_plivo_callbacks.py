"""plivo-api outcomes: the XML server's signed hangup/answer callbacks write busy / no-answer /
machine into the campaign store, and those outcomes drive the retries of the next run.
Real SQLite, the real plivo SDK against the fake Plivo API, the real Flask app."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bridge.outbound.campaign import CampaignOptions, CampaignRunner
from bridge.outbound.plivo_dialer import PlivoApiDialer
from bridge.outbound.wiring import open_outbound
from bridge.settings import Settings
from bridge.simulator.plivo.signing import sign_v3
from devkit.fake_plivo_api import FakePlivoApi
from xml_server import create_app

from .support import ALICE, BOB, CALLER_ID, CAROL, NOT_THE_GATE, FakeClock

TOKEN = "MjQ0NjY1YjIxNDc2ZWI0ZTRkZWJhY2Rm"
ANSWER = "http://localhost/answer"


def _settings(tmp_path: Path, **outbound: Any) -> Settings:
    return Settings.model_validate({
        "daemon": {"data_dir": str(tmp_path / "data")},
        # Open all day: the XML server stamps retries with the real time, so the test clock does too.
        "compliance": {"registered_caller_ids": [CALLER_ID], **NOT_THE_GATE,
                       "window_start": "00:00", "window_end": "24:00",
                       "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "outbound": {"retry_delay_s": 0, "max_attempts": 2, **outbound},
        "plivo": {"stream_require_token": False, "trusted_proxies": ["127.0.0.1/32"]},
    })


class Plivo:
    """Plays Plivo's side of the callbacks: signed POSTs to the URLs given at calls.create."""

    def __init__(self, settings: Settings) -> None:
        self.client = create_app(settings, TOKEN).test_client()

    def post(self, url: str, data: dict[str, str], token: str = TOKEN) -> int:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        sig = sign_v3(token, "POST", url, data)
        resp = self.client.post(path, data=data, headers=sig)
        return resp.status_code

    def hangup(self, body: dict[str, Any], status: str, cause: str, duration: str = "0", **more: str) -> int:
        return self.post(body["hangup_url"], {"CallUUID": "c-" + body["to"][-4:], "From": body["from"],
                                              "To": body["to"], "Direction": "outbound", "CallStatus": status,
                                              "HangupCause": cause, "Duration": duration,
                                              "BillDuration": duration, **more})


@pytest.fixture
def api():
    with FakePlivoApi() as fake:
        yield fake


async def test_busy_no_answer_and_machine_callbacks_drive_the_retries(tmp_path: Path, api) -> None:
    settings = _settings(tmp_path)
    clock = FakeClock(datetime.now(UTC))
    ob = open_outbound(settings, clock=clock, dialers={})
    plivo = Plivo(settings)
    listing = tmp_path / "june.csv"
    listing.write_text(f"number\n{ALICE}\n{BOB}\n{CAROL}\n")
    dialer = PlivoApiDialer(api.auth_id, api.auth_token, ANSWER, api_base_url=api.base_url)
    options = CampaignOptions(from_number=CALLER_ID, calls_per_second=100, retry_delay_s=0, max_attempts=2)
    try:
        ob.campaigns.load(listing, "IN")
        first = await CampaignRunner(ob.campaigns, ob.service, dialer, clock, options).run("june")
        assert first.counts == {"placed": 3}
        bodies = {r.body["to"]: r.body for r in api.call_creates()}
        assert plivo.hangup(bodies[ALICE], "busy", "USER_BUSY") == 200
        assert plivo.hangup(bodies[BOB], "no-answer", "NO_ANSWER") == 200
        # Carol's phone is an answering machine (machine_detection): the answer URL says so.
        carol = bodies[CAROL]
        answered = plivo.client.post(
            urlsplit(carol["answer_url"]).path + "?" + urlsplit(carol["answer_url"]).query,
            data=(data := {"CallUUID": "c-carol", "From": carol["from"], "To": carol["to"],
                           "Direction": "outbound", "CallStatus": "in-progress", "Machine": "true"}),
            headers=sign_v3(TOKEN, "POST", carol["answer_url"], data))
        assert answered.status_code == 200 and b"<Hangup" in answered.data  # on_machine = hangup
        plivo.hangup(carol, "completed", "NORMAL_CLEARING", "4", Machine="true")  # repeated: ignored
        assert ob.campaigns.counts("june") == {"queued": 2, "machine": 1}

        second = await CampaignRunner(ob.campaigns, ob.service, dialer, clock, options).run("june")
        assert second.dialed == 2
        bodies2 = {r.body["to"]: r.body for r in api.call_creates()[3:]}
        assert sorted(bodies2) == sorted([ALICE, BOB])  # busy and no-answer retried, machine not
        plivo.hangup(bodies2[ALICE], "completed", "NORMAL_CLEARING", "42")
        plivo.hangup(bodies2[BOB], "no-answer", "NO_ANSWER")  # second attempt: final
        third = await CampaignRunner(ob.campaigns, ob.service, dialer, clock, options).run("june")
        assert third.dialed == 0
        assert third.counts == {"answered": 1, "no-answer": 1, "machine": 1}
        rows = {r.masked[-2:]: r for r in ob.campaigns.results("june")}
        assert rows[ALICE[-2:]].attempts == 2 and rows[ALICE[-2:]].duration_s == 42.0
    finally:
        dialer.close()
        ob.close()


async def test_unsigned_or_forged_callbacks_write_nothing(tmp_path: Path, api) -> None:
    settings = _settings(tmp_path)
    clock = FakeClock(datetime.now(UTC))
    ob = open_outbound(settings, clock=clock, dialers={})
    plivo = Plivo(settings)
    listing = tmp_path / "june.csv"
    listing.write_text(f"number\n{ALICE}\n")
    dialer = PlivoApiDialer(api.auth_id, api.auth_token, ANSWER, api_base_url=api.base_url)
    try:
        ob.campaigns.load(listing, "IN")
        options = CampaignOptions(from_number=CALLER_ID, calls_per_second=100)
        await CampaignRunner(ob.campaigns, ob.service, dialer, clock, options).run("june")
        body = api.call_creates()[0].body
        assert plivo.post(body["hangup_url"], {"CallStatus": "busy"}, token="not-the-token") == 403
        parts = urlsplit(body["hangup_url"])
        unsigned = plivo.client.post(parts.path + "?" + parts.query, data={"CallStatus": "busy"})
        assert unsigned.status_code == 403
        assert ob.campaigns.counts("june") == {"placed": 1}
    finally:
        dialer.close()
        ob.close()


async def test_machine_message_is_left_after_the_beep(tmp_path: Path) -> None:
    settings = _settings(tmp_path, on_machine="message", machine_message="Please call us back.")
    plivo = Plivo(settings)
    data = {"CallUUID": "c1", "From": CALLER_ID, "To": ALICE, "Direction": "outbound", "Machine": "true"}
    resp = plivo.client.post("/answer?vb_call=abc", data=data,
                             headers=sign_v3(TOKEN, "POST", "http://localhost/answer?vb_call=abc", data))
    assert resp.status_code == 200
    assert b"<Speak" in resp.data and b"Please call us back." in resp.data and b"<Hangup" in resp.data
