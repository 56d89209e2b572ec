"""Campaign runner: dials a campaign's queued people with a concurrency limit and a
calls-per-second cap, applies the retry policy per outcome, backs off and then pauses itself
when the provider keeps failing, and stops (resumably) at the end of the calling window.

Every number goes through the compliance gate right before it is dialed (after pacing), so a
DND import or opt-out recorded mid-campaign takes effect at once. One run per campaign at a
time: the caller holds :class:`bridge.outbound.campaign_lock.CampaignLock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

from bridge.outbound.campaign_store import CampaignRow, CampaignStore
from bridge.outbound.compliance import Decision
from bridge.outbound.dialer import OUTCOME_OF, CallFinder, Dialer, PlacementResult, Sought
from bridge.outbound.dialer_clock import Clock
from bridge.outbound.pacing import Pacer
from bridge.outbound.service import OutboundService, new_call_id

log = logging.getLogger(__name__)

# A request that may have left is looked for at the provider from this long before we sent it
# (clock skew between us and the provider).
RECONCILE_SLACK_S = 5.0


class CallerIdRefused(ValueError):
    """The campaign's caller ID is malformed or not registered."""


@dataclass(frozen=True)
class CampaignOptions:
    from_number: str
    concurrency: int = 5
    calls_per_second: float = 2.0
    max_attempts: int = 2
    retry_delay_s: float = 600.0
    retry_on: frozenset[str] = frozenset({"busy", "no-answer"})
    # Not dialed if contacted by another campaign within this window (0 = no cross-campaign check).
    recontact_window_s: float = 30 * 86400.0
    force: bool = False  # dial even people another campaign contacted within the window
    max_consecutive_failures: int = 5  # provider unreachable / 5xx this many times -> pause
    backoff_s: float = 2.0  # first retry delay after a transport failure; doubles each time
    backoff_max_s: float = 60.0
    # A 'placed' row with no outcome this long after its request left (hangup callback lost,
    # daemon died mid-call) is looked up at the provider; above ring time + longest call.
    outcome_timeout_s: float = 7200.0
    stale_check_every_s: float = 600.0  # during a long run, look for such rows this often


@dataclass
class CampaignSummary:
    campaign_id: str
    counts: dict[str, int] = field(default_factory=dict)
    dialed: int = 0  # requests sent in this run
    requeued: int = 0  # interrupted rows that never left (or the provider has no call of): queued
    reconciled: int = 0  # interrupted rows the provider has a call for: recorded, not redialed
    unreconciled: int = 0  # interrupted rows the provider could not be asked about: next run
    unknown: int = 0  # interrupted rows on a path that cannot be asked: never redialed
    # 'placed' rows older than outcome_timeout_s without an outcome, looked up at the provider:
    stale_live: int = 0  # still queued/live there at the last check: left placed
    stale_settled: int = 0  # ended: outcome recorded (retry policy applied)
    stale_unknown: int = 0  # the provider has no such call / no outcome: unknown, never redialed
    stale_unchecked: int = 0  # the provider could not be asked at the last check: left placed
    paused_until: datetime | None = None  # stopped at the end of the calling window
    paused_reason: str = ""  # paused by itself (provider failing); run again later
    stopped: bool = False  # stopped on request

    @property
    def finished(self) -> bool:
        return self.paused_until is None and not self.stopped and not self.paused_reason


class CampaignRunner:
    def __init__(
        self,
        store: CampaignStore,
        service: OutboundService,
        dialer: Dialer,
        clock: Clock,
        options: CampaignOptions,
    ) -> None:
        self.store = store
        self.service = service
        self.dialer = dialer
        self.clock = clock
        self.options = options
        self.pacer = Pacer(options.calls_per_second, clock)
        self._failures = 0
        self._last_failure = ""
        self._hold_until = 0.0  # after a transport failure nothing is sent before this
        self._next_stale_check = 0.0

    def _now(self) -> float:
        return self.clock.wall().timestamp()

    async def run(self, campaign_id: str, stop: asyncio.Event | None = None) -> CampaignSummary:
        """Raises :class:`CallerIdRefused` before dialing anyone if the caller ID is not usable
        (otherwise every row would be refused, and consumed, for the same campaign-wide reason)."""
        _, problems = self.service.gate.check_caller_id(self.options.from_number)
        if problems:
            raise CallerIdRefused("; ".join(f"{p.rule}: {p.detail}" for p in problems))
        stop = stop or asyncio.Event()
        summary = CampaignSummary(campaign_id)
        await self._recover(campaign_id, summary)
        await self._settle_stale(campaign_id, summary)
        self.store.set_pause_reason(campaign_id, "")
        slots = asyncio.Semaphore(self.options.concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                if self._failures >= self.options.max_consecutive_failures:
                    summary.paused_reason = (
                        f"paused after {self._failures} consecutive failures to reach {self.dialer.name} "
                        f"(last: {self._last_failure}); nobody was used up: run again when it is back"
                    )
                    self.store.set_pause_reason(campaign_id, summary.paused_reason)
                    break
                if self._now() < self._hold_until:
                    await self._sleep(self._hold_until - self._now(), stop)
                    continue
                if self._now() >= self._next_stale_check:  # a long run settles its own lost outcomes
                    await self._settle_stale(campaign_id, summary)
                await slots.acquire()
                if self._now() < self._hold_until:  # a call failed while we waited for the slot
                    slots.release()
                    continue
                row = self.store.claim(campaign_id, self._now(), new_call_id(),
                                       self.options.recontact_window_s, self.options.force)
                if row is None:
                    slots.release()
                    if in_flight:
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    later = self.store.next_scheduled(campaign_id)
                    if later is None:
                        break
                    await self._sleep(later - self._now(), stop)
                    continue
                decision = self.service.check(row.e164, self.options.from_number, self.dialer.name)
                if decision.allowed:
                    await self.pacer.wait()  # refusals do not use up the calls-per-second budget
                    if stop.is_set():
                        self.store.release(row, 0.0, "requeued: stopped before dialing")
                        slots.release()
                        break
                    # time passed while pacing: the window may have closed, an opt-out arrived
                    decision = self.service.check(row.e164, self.options.from_number, self.dialer.name)
                if decision.only_hours:
                    self.store.release(row, 0.0, "requeued: outside the calling window")
                    slots.release()
                    summary.paused_until = decision.next_allowed
                    break  # the rest waits for the next window; resume then
                if not decision.allowed:
                    slots.release()
                    self.store.mark_refused(row, decision.rules, decision.describe())
                    continue
                row = self.store.mark_sending(row, self._now())
                summary.dialed += 1
                task = asyncio.create_task(self._dial(row, decision, slots))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        summary.stopped = stop.is_set()
        summary.counts = self.store.counts(campaign_id)
        return summary

    async def _dial(self, row: CampaignRow, decision: Decision, slots: asyncio.Semaphore) -> None:
        try:
            try:
                result = await self.service.dial_checked(self.dialer, decision, row.hint)
            except Exception as exc:  # a dialer bug must not kill the campaign or redial
                log.exception("dialer %s failed on campaign line %d", self.dialer.name, row.line_no)
                # It may have sent the request: leave the row 'sending' for the next run to
                # reconcile with the provider.
                result = PlacementResult("unavailable", detail=f"dialer error: {type(exc).__name__}",
                                         maybe_sent=True)
            self._apply(row, result)
        finally:
            slots.release()

    def _apply(self, row: CampaignRow, result: PlacementResult) -> None:
        opts = self.options
        now = self._now()
        if result.status == "unavailable":
            self._failures += 1
            self._last_failure = result.detail or "unavailable"
            # The whole campaign backs off, not just this row: every call would fail the same way.
            backoff = min(opts.backoff_max_s, opts.backoff_s * 2 ** (self._failures - 1))
            self._hold_until = max(self._hold_until, now + backoff)
            if not result.maybe_sent:
                self.store.release(row, now + backoff, f"retrying: {result.detail}")
            else:
                log.warning("campaign line %d: the request may have reached %s; the next run asks it "
                            "before dialing again", row.line_no, self.dialer.name)
            return
        self._failures = 0
        if result.status == "queued":
            self.store.mark_placed(row, result.call_id, result.detail)
            return
        outcome = OUTCOME_OF[result.status]
        self.store.record_outcome(
            ("row", row), outcome, retry=outcome in opts.retry_on, max_attempts=opts.max_attempts,
            retry_at=now + opts.retry_delay_s, call_id=result.call_id, detail=result.detail,
            duration_s=result.duration_s, transcript=result.transcript_path,
        )

    async def _recover(self, campaign_id: str, summary: CampaignSummary) -> None:
        """Rows a crashed run left: 'claimed' never left (queued again); 'sending' may have
        left, so the provider is asked before anyone is dialed again."""
        summary.requeued, maybe_sent = self.store.interrupted(campaign_id)
        if not maybe_sent:
            return
        if not isinstance(self.dialer, CallFinder):
            for row in maybe_sent:
                self.store.mark_unknown(
                    row, f"interrupted while placing; {self.dialer.name} cannot be asked, not redialed")
            summary.unknown += len(maybe_sent)
            return
        try:
            found_all = await self.dialer.find_calls(
                [Sought(row.e164, row.sending_at - RECONCILE_SLACK_S, row.hint) for row in maybe_sent])
        except Exception as exc:
            log.warning("cannot ask %s about %d interrupted call(s): %s", self.dialer.name, len(maybe_sent),
                        exc)
            summary.unreconciled += len(maybe_sent)  # they stay 'sending': the next run asks again
            return
        for row, found in zip(maybe_sent, found_all, strict=True):
            if found is None:
                self.store.release(row, 0.0, "requeued: the provider has no call from the interrupted run")
                summary.requeued += 1
            elif found.status == "queued":
                self.store.mark_placed(row, found.call_id, "found at the provider after an interrupted run")
                summary.reconciled += 1
            elif found.status == "lost":  # attempted, may have rung, no outcome: never redialed
                self.store.mark_unknown(row, f"interrupted while placing; {found.detail}; not redialed")
                summary.unknown += 1
            else:
                self._record_found(row, found, "found at the provider after an interrupted run")
                summary.reconciled += 1

    def _record_found(self, row: CampaignRow, found: PlacementResult, detail: str,
                      placed_call: str = "") -> None:
        outcome = OUTCOME_OF.get(found.status, "failed")
        self.store.record_outcome(
            ("row", row), outcome, retry=outcome in self.options.retry_on,
            max_attempts=self.options.max_attempts, retry_at=self._now() + self.options.retry_delay_s,
            call_id=found.call_id, detail=detail, placed_call=placed_call,
        )

    async def _settle_stale(self, campaign_id: str, summary: CampaignSummary) -> None:
        """'placed' rows whose outcome never came within outcome_timeout_s are looked up at
        the provider like interrupted rows: live -> left; ended -> outcome (retry policy);
        unknown to the provider -> 'unknown'. A placed call was taken by the provider and may
        have rung, so none of them is ever dialed again without an outcome saying so."""
        now = self._now()
        self._next_stale_check = now + self.options.stale_check_every_s
        stale = self.store.stale_placed(campaign_id, now - self.options.outcome_timeout_s)
        summary.stale_live = summary.stale_unchecked = 0  # as of this check (a long run repeats it)
        if not stale:
            return
        name = self.dialer.name
        if not isinstance(self.dialer, CallFinder):
            for row in stale:
                self.store.mark_placed_unknown(
                    row, f"no outcome {_age(now - row.sending_at)} after placing; {name} cannot be asked; "
                         "not redialed")
            summary.stale_unknown += len(stale)
            return
        try:
            found_all = await self.dialer.find_calls(
                [Sought(r.e164, r.sending_at - RECONCILE_SLACK_S, r.hint, r.call_id) for r in stale])
        except Exception as exc:
            log.warning("cannot ask %s about %d placed call(s) without an outcome: %s", name, len(stale), exc)
            summary.stale_unchecked += len(stale)  # still placed: the next check asks again
            return
        for row, found in zip(stale, found_all, strict=True):
            age = _age(now - row.sending_at)
            if found is None or found.status == "lost":
                why = found.detail if found is not None else f"{name} has no record of the call"
                if self.store.mark_placed_unknown(
                        row, f"no outcome {age} after placing; {why}; it may have rung: not redialed"):
                    summary.stale_unknown += 1
                    log.warning("campaign line %d: no outcome %s after placing and %s cannot account for "
                                "the call: marked unknown", row.line_no, age, name)
            elif found.status == "queued":
                checked = self.clock.wall().isoformat(timespec="seconds")
                self.store.note_still_live(
                    row, f"still {found.detail or 'live'} {age} after placing (checked {checked})")
                summary.stale_live += 1
            else:
                self._record_found(row, found, f"outcome looked up at {name}: none was reported {age} "
                                               "after placing", placed_call=row.call_id)
                summary.stale_settled += 1

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        """Sleep on the injected clock, cut short by a stop request."""
        sleeper = asyncio.ensure_future(self.clock.sleep(max(0.0, seconds)))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, stopper):
                fut.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fut


def _age(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
