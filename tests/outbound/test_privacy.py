"""DPDPA: no full number in any log record the outbound side emits (raw records, no masking filter)."""

import logging
from pathlib import Path

import pytest

from bridge.outbound.campaign import CampaignOptions, CampaignRunner
from bridge.outbound.erasure import forget
from bridge.outbound.plivo_dialer import PlivoApiDialer
from bridge.outbound.wiring import open_outbound
from devkit.fake_plivo_api import FakePlivoApi

from .support import ALICE, BOB, CALLER_ID, CAROL, MONDAY_10AM, FakeClock, RecordingDialer, make_settings

FORMS = [f for n in (ALICE, BOB, CAROL) for f in (n, n[1:], n[3:])]


def record_text(record: logging.LogRecord) -> str:
    return record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())


async def test_no_number_in_any_log_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock(MONDAY_10AM)
    with FakePlivoApi() as api:
        plivo = PlivoApiDialer(api.auth_id, api.auth_token, "https://vb.example.com/a",
                               api_base_url=api.base_url)
        flaky = RecordingDialer(clock, outcomes={BOB: ["busy"]})
        ob = open_outbound(make_settings(tmp_path), clock=clock, dialers={"plivo-api": plivo, "flaky": flaky})
        try:
            ob.registry.import_text(f"{ALICE}\n")
            await ob.service.call(ALICE, CALLER_ID, "plivo-api")  # refused: DND
            await ob.service.call(CAROL, CALLER_ID, "plivo-api")  # placed through the SDK
            api.fail_next(400, f"invalid destination {CAROL}")  # an API error that echoes the number
            failed = await ob.service.call(CAROL, CALLER_ID, "plivo-api")
            assert failed.placement is not None and failed.placement.status == "rejected"
            listing = tmp_path / "list.csv"
            listing.write_text(f"number\n{BOB}\n{CAROL}\n")
            cid = ob.campaigns.load(listing, "IN").name
            options = CampaignOptions(from_number=CALLER_ID, retry_delay_s=60)
            await CampaignRunner(ob.campaigns, ob.service, flaky, clock, options).run(cid)
            forget(ob, BOB)
        finally:
            ob.close()
    audit = [r for r in caplog.records if r.name == "bridge.outbound.audit"]
    assert len(audit) >= 6  # the scan below has lines to look at
    assert any("+91********10" in r.getMessage() for r in audit)
    leaks = [(r.name, f) for r in caplog.records for f in FORMS if f in record_text(r)]
    assert not leaks, leaks
