from datetime import timedelta
from pathlib import Path

import pytest

from bridge.outbound.compliance import ComplianceGate
from bridge.outbound.registry import DndRegistry
from bridge.outbound.store import OutboundStore
from bridge.settings import SettingsError, load_settings
from bridge.settings.outbound import ComplianceSettings

from .support import ALICE, BOB, CALLER_ID, CAROL, MONDAY_10AM, NOT_THE_GATE, FakeClock


@pytest.fixture
def env(tmp_path: Path):
    registry = DndRegistry.open(tmp_path)
    store = OutboundStore.open(tmp_path)
    registry.import_text("number,allowed_categories\n9876543210,\n9812345678,3|4\n")
    yield registry, store
    registry.close()
    store.close()


def gate(env, clock: FakeClock | None = None, **values) -> ComplianceGate:
    settings = ComplianceSettings.model_validate(
        {"registered_caller_ids": ["011 4000 0000"], **NOT_THE_GATE, **values})
    registry, store = env
    return ComplianceGate(settings, registry, store, (clock or FakeClock()).wall)


def test_clean_number_in_hours_is_allowed(env) -> None:
    decision = gate(env).check("070123 45678", CALLER_ID)
    assert decision.allowed and decision.to_e164 == CAROL and decision.from_e164 == CALLER_ID


def test_dnd_listed_is_refused_with_reason(env) -> None:
    decision = gate(env).check(ALICE, CALLER_ID)
    assert decision.rules == ["dnd"]
    assert "fully blocked" in decision.refusals[0].detail
    assert "9876543210" not in decision.describe()


def test_partial_preferences_follow_the_commercial_category(env) -> None:
    assert gate(env, commercial_category=3).check(BOB, CALLER_ID).allowed
    refused = gate(env, commercial_category=2).check(BOB, CALLER_ID)
    assert refused.rules == ["dnd"] and "real estate" in refused.refusals[0].detail
    assert gate(env).check(BOB, CALLER_ID).rules == ["dnd"]  # category unspecified


def test_transactional_calls_need_consent_on_dnd_numbers(env) -> None:
    _, store = env
    g = gate(env, call_category="transactional")
    assert g.check(ALICE, CALLER_ID).rules == ["dnd"]
    store.add_consent(ALICE, "order updates")
    assert g.check(ALICE, CALLER_ID).allowed
    store.revoke_consent(ALICE)
    assert not g.check(ALICE, CALLER_ID).allowed


def test_consent_does_not_unlock_promotional_calls(env) -> None:
    _, store = env
    store.add_consent(ALICE, "order updates")
    assert gate(env).check(ALICE, CALLER_ID).rules == ["dnd"]


def test_opt_out_blocks_every_category(env) -> None:
    _, store = env
    store.add_optout(CAROL)
    assert gate(env).check(CAROL, CALLER_ID).rules == ["opted_out"]
    assert gate(env, call_category="service").check(CAROL, CALLER_ID).rules == ["opted_out"]


def test_unregistered_and_malformed_caller_ids(env) -> None:
    assert gate(env).check(CAROL, "+911149999999").rules == ["caller_id_unregistered"]
    assert gate(env).check(CAROL, "12").rules == ["caller_id_invalid"]


def test_every_blocking_rule_is_named_with_next_allowed_time(env) -> None:
    clock = FakeClock(MONDAY_10AM.replace(hour=22))
    decision = gate(env, clock).check(ALICE, "+911149999999")
    assert decision.rules == ["caller_id_unregistered", "dnd", "outside_hours"]
    assert decision.next_allowed == MONDAY_10AM.replace(hour=9) + timedelta(days=1)
    assert "next allowed 2025-01-07T09:00+05:30" in decision.describe()


def test_malformed_destination_and_hours_together(env) -> None:
    clock = FakeClock(MONDAY_10AM.replace(hour=6))
    decision = gate(env, clock).check("hello", CALLER_ID)
    assert decision.rules == ["number_invalid", "outside_hours"]
    assert not decision.only_hours
    assert gate(env, clock).check(CAROL, CALLER_ID).only_hours


def test_window_follows_the_injected_clock(env) -> None:
    clock = FakeClock(MONDAY_10AM.replace(hour=20, minute=59))
    g = gate(env, clock)
    assert g.check(CAROL, CALLER_ID).allowed
    clock.advance(60)
    assert g.check(CAROL, CALLER_ID).rules == ["outside_hours"]


def test_settings_validation_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[compliance]\nwindow_start = "24:00"\nwindow_end = "9pm"\ntimezone = "Mars/Base"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(bad, environ={})
    keys = [k for k, _ in info.value.errors]
    assert "compliance.window_end" in keys and "compliance.timezone" in keys
    swapped = tmp_path / "swapped.toml"
    swapped.write_text('[compliance]\nwindow_start = "21:00"\nwindow_end = "09:00"\n')
    with pytest.raises(SettingsError, match="window_start must be before"):
        load_settings(swapped, environ={})


# The gate's rules that are on by default (issue 9) -------------------------------------------
PROMO_ID = "+911409876500"  # a 140-series number (TRAI: promotional voice calls)
US = "+14155552671"


def defaults(env, clock: FakeClock | None = None, **values) -> ComplianceGate:
    """A gate with the shipped defaults (consent for promotional, 140 series, own country)."""
    settings = ComplianceSettings.model_validate({"registered_caller_ids": [PROMO_ID, CALLER_ID], **values})
    registry, store = env
    return ComplianceGate(settings, registry, store, (clock or FakeClock()).wall)


def test_opt_out_and_dnd_are_both_named(env) -> None:
    _, store = env
    store.add_optout(ALICE)  # ALICE is also fully blocked on the DND registry
    decision = gate(env).check(ALICE, CALLER_ID)
    assert decision.rules == ["opted_out", "dnd"]


def test_only_the_default_region_is_called_unless_allowed(env) -> None:
    decision = gate(env).check(US, CALLER_ID)
    assert decision.rules == ["country_not_allowed"]
    assert "US" in decision.refusals[0].detail and "(IN)" in decision.refusals[0].detail
    assert gate(env, allowed_countries=["in", "US"]).check(US, CALLER_ID).allowed


def test_promotional_calls_need_consent_by_default(env) -> None:
    _, store = env
    decision = defaults(env).check(CAROL, PROMO_ID)
    assert decision.rules == ["no_consent"] and "compliance.consent_required" in decision.refusals[0].detail
    store.add_consent(CAROL, "offers")
    assert defaults(env).check(CAROL, PROMO_ID).allowed
    # transactional calls to a number not on DND need none (unless configured)
    store.revoke_consent(CAROL)
    assert defaults(env, call_category="transactional").check(CAROL, CALLER_ID).allowed
    assert defaults(env, call_category="transactional",
                    consent_required=["transactional"]).check(CAROL, CALLER_ID).rules == ["no_consent"]


def test_caller_id_must_be_in_the_series_of_the_category(env) -> None:
    _, store = env
    store.add_consent(CAROL, "offers")
    landline = defaults(env).check(CAROL, CALLER_ID)  # a Delhi landline for a promotional call
    assert landline.rules == ["caller_id_series"] and "+91140" in landline.refusals[0].detail
    assert defaults(env).check(CAROL, PROMO_ID).allowed
    bfsi = defaults(env, call_category="service", caller_id_series={"service": ["+91160"]})
    assert bfsi.check(CAROL, CALLER_ID).rules == ["caller_id_series"]
    assert bfsi.check_caller_id(CALLER_ID)[1][0].rule == "caller_id_series"  # campaigns check it once


def test_caller_id_series_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown call category"):
        ComplianceSettings.model_validate({"caller_id_series": {"marketing": ["+91140"]}})
    with pytest.raises(ValueError, match="prefixes"):
        ComplianceSettings.model_validate({"caller_id_series": {"promotional": ["140"]}})
    with pytest.raises(ValueError, match="two-letter"):
        ComplianceSettings.model_validate({"allowed_countries": ["India"]})
