"""The compliance gate: every rule that blocks a call, checked before anything is dialed.

Rules (names are stable, used in audit rows, CLI output and HTTP 403 bodies); every rule that
blocks a call is named, not only the first:

* number_invalid: the destination is not a valid number;
* country_not_allowed: its country is not in compliance.allowed_countries (default: the
  default region only);
* caller_id_invalid, caller_id_unregistered: the caller ID is malformed or not in
  compliance.registered_caller_ids;
* caller_id_series: the caller ID is not in the number series the call category requires
  (compliance.caller_id_series; TRAI: 140 series for promotional calls);
* opted_out: the person asked not to be called;
* dnd: on the NDNC/DND registry (promotional: unless the subscriber accepts the category;
  transactional/service: unless there is recorded consent);
* no_consent: the category needs recorded consent (compliance.consent_required; by default
  promotional, per Plivo's India guidance);
* outside_hours: outside the calling window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bridge.outbound.hours import CallingWindow
from bridge.outbound.numbers import InvalidNumber, normalise, region_of
from bridge.outbound.registry import DndRegistry
from bridge.outbound.store import OutboundStore
from bridge.settings.outbound import ComplianceSettings

CATEGORY_NAMES = {
    1: "banking/insurance/financial",
    2: "real estate",
    3: "education",
    4: "health",
    5: "consumer goods/automobiles",
    6: "communication/broadcasting/entertainment/IT",
    7: "tourism/leisure",
    8: "food/beverages",
}


@dataclass(frozen=True)
class Refusal:
    rule: str
    detail: str  # human-readable; never contains the full number


@dataclass(frozen=True)
class Decision:
    to_e164: str | None
    from_e164: str | None
    refusals: tuple[Refusal, ...]
    next_allowed: datetime | None  # set when outside the window

    @property
    def allowed(self) -> bool:
        return not self.refusals

    @property
    def rules(self) -> list[str]:
        return [r.rule for r in self.refusals]

    @property
    def only_hours(self) -> bool:
        """Refused for the time of day alone: the call can be made later as it is."""
        return self.rules == ["outside_hours"]

    def describe(self) -> str:
        if self.allowed:
            return "allowed"
        lines = [f"{r.rule}: {r.detail}" for r in self.refusals]
        return "refused: " + "; ".join(lines)


class ComplianceGate:
    def __init__(
        self,
        settings: ComplianceSettings,
        registry: DndRegistry,
        store: OutboundStore,
        wall_clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.wall_clock = wall_clock
        self.window = CallingWindow(
            settings.timezone, settings.window_start, settings.window_end, settings.days
        )
        self._registered = self._registered_ids(settings)

    @staticmethod
    def _registered_ids(settings: ComplianceSettings) -> frozenset[str]:
        out = set()
        for raw in settings.registered_caller_ids:
            try:
                out.add(normalise(raw, settings.default_region))
            except InvalidNumber:
                continue  # a bad entry registers nothing; `dnd check` reports it
        return frozenset(out)

    def check_caller_id(self, from_raw: str) -> tuple[str | None, list[Refusal]]:
        """The caller ID in E.164 (or None) and what is wrong with it (campaigns check it once)."""
        try:
            from_e164 = normalise(from_raw, self.settings.default_region)
        except InvalidNumber as exc:
            return None, [Refusal("caller_id_invalid", f"caller ID: {exc}")]
        problems = []
        if from_e164 not in self._registered:
            problems.append(
                Refusal("caller_id_unregistered", "caller ID is not in compliance.registered_caller_ids"))
        category = self.settings.call_category
        series = self.settings.caller_id_series.get(category) or []
        if series and not from_e164.startswith(tuple(series)):
            problems.append(Refusal(
                "caller_id_series",
                f"{category} calls must come from a number in the {', '.join(series)} series "
                "(compliance.caller_id_series)"))
        return from_e164, problems

    def check(self, to_raw: str, from_raw: str) -> Decision:
        refusals: list[Refusal] = []
        to_e164: str | None = None
        try:
            to_e164 = normalise(to_raw, self.settings.default_region)
        except InvalidNumber as exc:
            refusals.append(Refusal("number_invalid", f"destination: {exc}"))
        from_e164, caller_refusals = self.check_caller_id(from_raw)
        refusals.extend(caller_refusals)
        if to_e164 is not None:
            allowed = self.settings.allowed_countries or [self.settings.default_region.upper()]
            region = region_of(to_e164)
            if region not in allowed:
                refusals.append(Refusal(
                    "country_not_allowed",
                    f"destination country {region or 'unknown'} is not in compliance.allowed_countries "
                    f"({', '.join(allowed)})"))
            refusals.extend(self._scrub(to_e164))
        next_allowed = None
        now = self.wall_clock()
        if not self.window.is_open(now):
            next_allowed = self.window.next_open(now)
            refusals.append(
                Refusal(
                    "outside_hours",
                    f"outside the calling window ({self.window.describe()}); "
                    f"next allowed {next_allowed.isoformat(timespec='minutes')}",
                )
            )
        return Decision(to_e164, from_e164, tuple(refusals), next_allowed)

    def _scrub(self, e164: str) -> list[Refusal]:
        refusals = []
        if self.store.is_opted_out(e164):
            refusals.append(Refusal("opted_out", "the person asked not to be called"))
        category = self.settings.call_category
        consent = self.store.has_consent(e164)
        entry = self.registry.lookup(e164)
        if entry is not None:
            if category == "promotional":
                wanted = self.settings.commercial_category
                if entry.blocks(wanted):
                    what = "fully blocked" if entry.fully_blocked else "does not accept " + (
                        CATEGORY_NAMES.get(wanted, "unspecified-category") + " calls"
                    )
                    refusals.append(Refusal("dnd", f"on the NDNC/DND registry ({what})"))
            elif not consent:
                refusals.append(
                    Refusal("dnd", f"on the NDNC/DND registry and no recorded consent for {category} calls"))
        if category in self.settings.consent_required and not consent:
            refusals.append(Refusal(
                "no_consent", f"no recorded consent for {category} calls (compliance.consent_required)"))
        return refusals
