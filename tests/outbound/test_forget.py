"""`forget` erases a person's outbound data, down to the bytes of the SQLite file."""

from pathlib import Path

from bridge.outbound.erasure import forget
from bridge.outbound.wiring import open_outbound

from .support import ALICE, BOB, CALLER_ID, FakeClock, RecordingDialer, make_settings


def traces(directory: Path, e164: str) -> list[str]:
    """Files under the outbound dir that still hold the number as text or as a SQLite integer."""
    value = int(e164.lstrip("+"))
    needles = [e164.encode(), e164[3:].encode(), value.to_bytes(6, "big")]
    found = []
    for path in directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}:{n!r}" for n in needles if n in data]
    return found


async def test_forget_erases_consent_campaign_rows_transcripts_and_audit(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(tmp_path)
    dialer = RecordingDialer(clock)
    ob = open_outbound(settings, clock=clock, dialers={"test-dialer": dialer})
    try:
        ob.store.add_consent(ALICE, "order updates")
        ob.store.add_consent(BOB, "order updates")
        await ob.service.call(ALICE, CALLER_ID, "test-dialer")
        await ob.service.call(BOB, CALLER_ID, "test-dialer")
        csv_path = tmp_path / "list.csv"
        csv_path.write_text(f"number\n{ALICE}\n{BOB}\n")
        cid = ob.campaigns.load(csv_path, "IN").name
        transcript = tmp_path / "alice-transcript.txt"
        transcript.write_text("hello")
        ob.store.conn.execute("UPDATE campaign_person SET transcript=? WHERE line_no=2", (str(transcript),))
        assert traces(tmp_path / "outbound", ALICE)  # the check can see a number when it is there

        report = forget(ob, ALICE)

        assert report.consent == 1 and report.campaign_rows == 1 and report.audit_rows == 2
        assert report.files == 1 and not transcript.exists()
        assert not ob.store.has_consent(ALICE) and ob.store.audit_rows(ALICE) == []
        # others are untouched
        assert ob.store.has_consent(BOB) and len(ob.store.audit_rows(BOB)) == 2
        rows = {r.line_no: r for r in ob.campaigns.results(cid)}
        assert 2 not in rows and rows[3].state == "queued"
    finally:
        ob.close()
    assert traces(tmp_path / "outbound", ALICE) == []
    assert traces(tmp_path / "outbound", BOB)


def test_opt_out_is_kept_unless_asked(tmp_path: Path) -> None:
    ob = open_outbound(make_settings(tmp_path), clock=FakeClock(), dialers={})
    try:
        ob.store.add_optout(ALICE)
        kept = forget(ob, ALICE)
        assert kept.optout_kept and ob.store.is_opted_out(ALICE)
        assert ob.gate.check(ALICE, CALLER_ID).rules == ["opted_out"]
        removed = forget(ob, ALICE, include_optout=True)
        assert removed.optout_removed and not ob.store.is_opted_out(ALICE)
    finally:
        ob.close()


def test_rows_of_campaigns_from_before_the_per_person_model_are_erased(tmp_path: Path) -> None:
    ob = open_outbound(make_settings(tmp_path), clock=FakeClock(), dialers={})
    try:
        ob.store.conn.executescript(
            "CREATE TABLE campaign_row (campaign_id TEXT, row_no INTEGER, number INTEGER, masked TEXT);"
            f"INSERT INTO campaign_row VALUES ('old', 2, {ALICE[1:]}, '+91********10');"
            f"INSERT INTO campaign_row VALUES ('old', 3, {BOB[1:]}, '+91********78');")
        assert forget(ob, ALICE).campaign_rows == 1
        left = ob.store.conn.execute("SELECT number FROM campaign_row").fetchall()
        assert left == [(int(BOB[1:]),)]
    finally:
        ob.close()
