"""`forget` after inbound calls, outbound calls and a campaign: no file or row of the person is
left in the data directory (grepped for the number, its masked and its pseudonymous forms),
everybody else's data is untouched, and a second run finds nothing."""

import logging
from pathlib import Path

import pytest

from bridge import cli
from bridge.callmodel import CallInfo
from bridge.conversation.transcript import TranscriptWriter
from bridge.media.recording import CallRecorder, recording_path, write_subject
from bridge.outbound.campaign import CampaignOptions, CampaignRunner
from bridge.outbound.wiring import open_outbound
from bridge.privacy import mask_number
from bridge.pseudonym import call_subject, load_key, subject_of
from bridge.settings import load_settings

from .support import ALICE, BOB, CALLER_ID, TOML_NOT_THE_GATE, FakeClock, RecordingDialer

BRIDGE_NUMBER = "+918035735100"


def forms(e164: str, key: bytes) -> list[str]:
    national = e164[3:]
    spaced = f"{national[:5]} {national[5:]}"
    return [e164, e164[1:], national, spaced, mask_number(e164), subject_of(key, e164)]


def grep(folder: Path, needles: list[str]) -> list[tuple[str, str]]:
    """Files holding any of the forms as text, or the number as SQLite stores an INTEGER."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [(path.name, n) for n in needles if n.encode() in data]
            hits += [(path.name, f"int:{n}") for n in needles
                     if n[1:].isdigit() and n.startswith("+") and int(n[1:]).to_bytes(6, "big") in data]
    return hits


@pytest.fixture(autouse=True)
def keep_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _call(settings, call_id: str, info: CallInfo, record: bool) -> None:
    writer = TranscriptWriter.for_call(settings, info)
    writer.write("turn", role="user", text="hello, this is about my order")
    writer.close()
    if record:
        path = recording_path(settings.media.recordings_dir, call_id)
        recorder = CallRecorder(path)
        recorder.write(bytes(320), bytes(320))
        recorder.close()
        write_subject(path, call_subject(settings.daemon.data_dir, "IN", info.direction, info.from_uri,
                                         info.to_uri, info.plivo_headers))


async def test_forget_leaves_nothing_of_the_person_and_touches_nobody_else(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    config = tmp_path / "vb.toml"
    config.write_text(f"""
[daemon]
data_dir = "{data}"
[conversation]
transcripts_dir = "{data / 'transcripts'}"
[media]
recordings_dir = "{data / 'recordings'}"
[compliance]
registered_caller_ids = ["{CALLER_ID}"]
{TOML_NOT_THE_GATE}""")
    settings = load_settings(config, environ={})
    src = ("192.0.2.1", 5060)
    # Inbound calls from Alice and Bob straight over SIP, each recorded.
    bridge = f"sip:{BRIDGE_NUMBER}@b"
    _call(settings, "in-alice", CallInfo("in-alice", f"sip:{ALICE}@192.0.2.1", bridge, src), True)
    _call(settings, "in-bob", CallInfo("in-bob", f"sip:{BOB}@192.0.2.1", bridge, src), True)
    # An outbound plivo-api call to Alice: Plivo hands it to the bridge with the parties in X-PH.
    facts = {"From": CALLER_ID, "To": ALICE, "Direction": "outbound"}
    _call(settings, "out-alice", CallInfo("out-alice", "sip:plivo@192.0.2.9", "sip:bridge@b", src,
                                          plivo_headers=facts), True)
    # An outbound trunk call to Alice (no recording).
    _call(settings, "trunk-alice", CallInfo("trunk-alice", f"sip:{CALLER_ID}@b", f"sip:{ALICE}@trunk", src,
                                            direction="outbound"), False)
    # A campaign with both of them, consent for both.
    clock = FakeClock()
    dialer = RecordingDialer(clock)
    ob = open_outbound(settings, clock=clock, dialers={"test-dialer": dialer})
    try:
        ob.store.add_consent(ALICE, "orders")
        ob.store.add_consent(BOB, "orders")
        listing = tmp_path / "june.csv"
        listing.write_text(f"number\n{ALICE}\n{BOB}\n{ALICE}\n")
        ob.campaigns.load(listing, "IN")
        await CampaignRunner(ob.campaigns, ob.service, dialer, clock,
                             CampaignOptions(from_number=CALLER_ID, calls_per_second=100)).run("june")
    finally:
        ob.close()
    key = load_key(data)
    alice, bob = forms(ALICE, key), forms(BOB, key)
    # the grep does see the masked and pseudonymous forms while they are there
    seen = {n for _, n in grep(data, alice)}
    assert seen >= {mask_number(ALICE), subject_of(key, ALICE), f"int:{ALICE}"}

    rc = cli.main(["forget", ALICE, "--config", str(config)])
    out = capsys.readouterr().out
    assert rc == 0
    assert ("consent=1 campaign_rows=1 audit_rows=2 transcripts=3 recordings=2" in out), out
    assert grep(data, alice) == []
    assert {n for _, n in grep(data, bob)} >= {mask_number(BOB), subject_of(key, BOB)}
    assert len(list((data / "transcripts").glob("*.jsonl"))) == 1
    assert len(list((data / "recordings").glob("*.wav"))) == 1

    rc = cli.main(["forget", ALICE, "--config", str(config)])  # idempotent
    out = capsys.readouterr().out
    assert rc == 0 and "consent=0 campaign_rows=0 audit_rows=0 transcripts=0 recordings=0" in out
    assert ALICE not in out and ALICE[3:] not in out
