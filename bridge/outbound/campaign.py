"""Campaign runner: dials a loaded campaign with a concurrency limit and a calls-per-second cap,
retries busy/no-answer per policy, and stops (resumably) at the end of the calling window.

Every number goes through the compliance gate right before it is dialed (after pacing), so a
DND import or opt-out recorded mid-campaign takes effect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

from bridge.outbound.campaign_store import CampaignRow, CampaignStore
from bridge.outbound.clock import Clock
from bridge.outbound.compliance import Decision
from bridge.outbound.dialer import Dialer, PlacementResult
from bridge.outbound.pacing import Pacer
from bridge.outbound.service import OutboundService, new_call_id

log = logging.getLogger(__name__)


class CallerIdRefused(ValueError):
    """The campaign's caller ID is malformed or not registered."""


@dataclass(frozen=True)
class CampaignOptions:
    from_number: str
    concurrency: int = 5
    calls_per_second: float = 2.0
    max_attempts: int = 2
    retry_delay_s: float = 600.0


@dataclass
class CampaignSummary:
    campaign_id: str
    counts: dict[str, int] = field(default_factory=dict)
    dialed: int = 0  # placements attempted in this run
    recovered: int = 0  # rows left in 'dialing' by an interrupted run (marked unknown)
    paused_until: datetime | None = None  # stopped at the end of the calling window
    stopped: bool = False  # stopped on request

    @property
    def finished(self) -> bool:
        return self.paused_until is None and not self.stopped


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

    async def run(self, campaign_id: str, stop: asyncio.Event | None = None) -> CampaignSummary:
        """Raises :class:`CallerIdRefused` before dialing anyone if the caller ID is not usable
        (otherwise every row would be refused, and consumed, for the same campaign-wide reason)."""
        _, problems = self.service.gate.check_caller_id(self.options.from_number)
        if problems:
            raise CallerIdRefused("; ".join(f"{p.rule}: {p.detail}" for p in problems))
        stop = stop or asyncio.Event()
        summary = CampaignSummary(campaign_id, recovered=self.store.recover_interrupted(campaign_id))
        slots = asyncio.Semaphore(self.options.concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                await slots.acquire()
                row = self.store.next_due(campaign_id, self.clock.wall().timestamp())
                if row is None:
                    slots.release()
                    if in_flight:
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    later = self.store.next_scheduled(campaign_id)
                    if later is None:
                        break
                    await self._sleep(later - self.clock.wall().timestamp(), stop)
                    continue
                decision = self.service.check(row.e164, self.options.from_number, self.dialer.name)
                if decision.allowed:
                    await self.pacer.wait()  # refusals do not use up the calls-per-second budget
                    if stop.is_set():
                        slots.release()
                        break
                    # time passed while pacing: the window may have closed, an opt-out arrived
                    decision = self.service.check(row.e164, self.options.from_number, self.dialer.name)
                if decision.only_hours:
                    slots.release()
                    summary.paused_until = decision.next_allowed
                    break  # the rest waits for the next window; resume then
                if not decision.allowed:
                    slots.release()
                    self.store.mark_refused(row, decision.rules, decision.describe())
                    continue
                self.store.mark_dialing(row)
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
                result = await self.service.dial_checked(self.dialer, decision, new_call_id())
            except Exception as exc:  # a dialer bug must not kill the campaign or redial
                log.exception("dialer %s failed on campaign row %d", self.dialer.name, row.row_no)
                result = PlacementResult("failed", detail=f"dialer error: {type(exc).__name__}")
            retry_at = self.clock.wall().timestamp() + self.options.retry_delay_s
            self.store.record(row, result, self.options.max_attempts, retry_at)
        finally:
            slots.release()

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
