"""The outbound subcommands end to end through `voice-bridge` (bridge.cli.main), with the real
plivo SDK against the fake Plivo API; every output line is scanned for unmasked numbers."""

import json
import logging
from pathlib import Path

import pytest

from bridge import cli
from devkit.fake_plivo_api import FakePlivoApi

from .support import ALICE, BOB, CALLER_ID, CAROL, TOML_NOT_THE_GATE

# Every form of the test numbers that would identify a person.
PII = [n for e164 in (ALICE, BOB, CAROL) for n in (e164, e164[1:], e164[3:], f"{e164[3:8]} {e164[8:]}")]


@pytest.fixture(autouse=True)
def keep_root_logging():
    # setup_logging (called by each command) replaces the root handlers: restore pytest's.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def api():
    with FakePlivoApi() as fake:
        yield fake


@pytest.fixture
def config(tmp_path: Path, api: FakePlivoApi, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PLIVO_AUTH_ID", api.auth_id)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", api.auth_token)
    for name in list(__import__("os").environ):
        if name.startswith("VOICE_BRIDGE_"):
            monkeypatch.delenv(name)
    path = tmp_path / "vb.toml"
    # Numbers allowed in logs by configuration: what we log must be masked by our own code anyway.
    path.write_text(f"""
[daemon]
data_dir = "{tmp_path / 'data'}"
[logging]
level = "DEBUG"
format = "json"
log_phone_numbers = true
[compliance]
registered_caller_ids = ["{CALLER_ID}"]
{TOML_NOT_THE_GATE}days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
window_start = "00:00"
window_end = "24:00"
[outbound]
via = "plivo-api"
answer_url = "https://vb.example.com/plivo/answer"
plivo_api_url = "{api.base_url}"
calls_per_second = 50
""")
    return path


def vb(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def assert_no_pii(text: str) -> None:
    leaks = [n for n in PII if n in text]
    assert not leaks, f"unmasked numbers in output: {leaks}"


def test_dnd_import_check_and_refused_call(config: Path, tmp_path: Path, api: FakePlivoApi, capsys) -> None:
    scrub = tmp_path / "scrub.csv"
    scrub.write_text("number,allowed_categories\n98765 43210,\n98123-45678,2\nrubbish,\n")
    rc, out = vb(capsys, "dnd", "import", str(scrub), "--config", str(config))
    assert rc == 0 and "imported 2 of 3 rows; 1 invalid" in out and "lines 4" in out
    rc, out = vb(capsys, "dnd", "check", ALICE, "--config", str(config))
    assert rc == 3 and "dnd: on the NDNC/DND registry (fully blocked)" in out
    rc, out = vb(capsys, "call", "--to", ALICE, "--from", "+911149999999", "--config", str(config))
    assert rc == 3
    assert "dnd:" in out and "caller_id_unregistered:" in out
    rc, out = vb(capsys, "call", "--to", "12345", "--config", str(config))
    assert rc == 3 and "number_invalid" in out
    assert api.requests == []  # nothing reached the API
    assert_no_pii(out)


def test_call_is_placed_through_the_plivo_sdk(config: Path, api: FakePlivoApi, capsys) -> None:
    argv = ["call", "--to", "070123 45678", "--agent", "sales", "--json", "--config", str(config)]
    rc, out = vb(capsys, *argv)
    assert rc == 0, out
    [result] = [json.loads(line) for line in out.splitlines() if line.startswith('{"to"')]
    assert result["status"] == "queued" and result["to"] == "+91********78"
    [req] = api.call_creates()
    assert req.body["to"] == CAROL and req.body["from"] == CALLER_ID
    assert req.body["answer_url"].startswith("https://vb.example.com/plivo/answer?vb_call=")
    assert req.body["answer_url"].endswith("&agent=sales")
    assert result["call_id"] == next(iter(api.calls))
    # the audit lines were logged (masked), and nothing else carries the number
    audit = [json.loads(line) for line in out.splitlines() if '"bridge.outbound.audit"' in line]
    assert [a["msg"].split()[1] for a in audit] == ["allowed", "placed"]
    assert_no_pii(out)


def test_api_failure_exits_1(config: Path, api: FakePlivoApi, capsys) -> None:
    api.fail_next(400, "from number not verified")
    rc, out = vb(capsys, "call", "--to", CAROL, "--config", str(config))
    assert rc == 1 and "rejected" in out and "from number not verified" in out


def test_sip_trunk_path_is_reported_unavailable(config: Path, api: FakePlivoApi, capsys) -> None:
    rc, out = vb(capsys, "call", "--to", CAROL, "--via", "sip-trunk", "--config", str(config))
    assert rc == 2 and "through the running daemon" in out and api.requests == []


def test_campaign_run_resume_status_results(config: Path, tmp_path: Path, api: FakePlivoApi, capsys) -> None:
    vb(capsys, "dnd", "optout", BOB, "--config", str(config))
    listing = tmp_path / "june.csv"
    listing.write_text(f"name,number\na,{ALICE}\nb,{BOB}\nc,{CAROL}\nd,{ALICE}\ne,oops\n")
    rc, out = vb(capsys, "campaign", "run", str(listing), "--name", "june", "--config", str(config))
    assert rc == 0, out
    assert "campaign june: created; 3 new, 0 already in it, 1 invalid, 1 duplicate" in out
    assert sorted(r.body["to"] for r in api.call_creates()) == [CAROL, ALICE]
    rc, out2 = vb(capsys, "campaign", "run", str(listing), "--name", "june", "--config", str(config))
    assert rc == 0 and "resuming" in out2 and "dialed 0 this run" in out2
    assert len(api.call_creates()) == 2  # nobody twice
    rc, out3 = vb(capsys, "campaign", "status", "june", "--config", str(config))
    assert "placed=2" in out3 and "refused=1" in out3 and "bad_line=2" in out3
    results = (tmp_path / "june.results.csv").read_text()
    assert len(results.splitlines()) == 6  # header, 3 people, 2 unusable lines
    assert "opted_out" in results
    assert_no_pii(out + out2 + out3 + results)


def test_forget_command(config: Path, api: FakePlivoApi, capsys) -> None:
    vb(capsys, "dnd", "consent", CAROL, "--purpose", "delivery", "--config", str(config))
    vb(capsys, "call", "--to", CAROL, "--config", str(config))
    rc, out = vb(capsys, "forget", CAROL, "--config", str(config))
    assert rc == 0 and "consent=1" in out and "audit_rows=2" in out
    rc, out2 = vb(capsys, "forget", "not a number", "--config", str(config))
    assert rc == 2 and "invalid number" in out2
    assert_no_pii(out + out2)


def test_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[compliance]\nwindow_end = "25:00"\n')
    rc, out = vb(capsys, "call", "--to", CAROL, "--config", str(bad))
    assert rc == 2 and "compliance.window_end" in out


def test_campaign_with_unregistered_caller_id_dials_nobody(config: Path, tmp_path: Path, api, capsys) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(f"number\n{CAROL}\n")
    rc, out = vb(capsys, "campaign", "run", str(listing), "--from", "+911149999999", "--config", str(config))
    assert rc == 2 and "caller_id_unregistered" in out and api.requests == []
