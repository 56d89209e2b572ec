"""One outbound call: compliance gate -> dialer -> audit. The only way to reach a dialer."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.outbound.compliance import ComplianceGate, Decision
from bridge.outbound.dialer import Dialer, PlacementResult
from bridge.outbound.store import OutboundStore


class DialerUnavailable(RuntimeError):
    """The requested path (e.g. sip-trunk) has no dialer in this process."""


@dataclass(frozen=True)
class CallAttempt:
    decision: Decision
    placement: PlacementResult | None  # None when refused
    call_id_hint: str

    @property
    def placed(self) -> bool:
        return self.placement is not None and self.placement.ok


def new_call_id() -> str:
    return uuid.uuid4().hex  # alphanumeric: usable in Plivo sip_headers


class OutboundService:
    def __init__(self, gate: ComplianceGate, store: OutboundStore, dialers: Mapping[str, Dialer]) -> None:
        self.gate = gate
        self.store = store
        self.dialers = dict(dialers)

    def dialer(self, via: str) -> Dialer:
        try:
            return self.dialers[via]
        except KeyError:
            available = ", ".join(sorted(self.dialers)) or "none"
            raise DialerUnavailable(f"no dialer for {via!r} (available: {available})") from None

    def check(self, to_raw: str, from_raw: str, via: str, audit: bool = True) -> Decision:
        decision = self.gate.check(to_raw, from_raw)
        if audit and not decision.allowed:
            self.store.audit(
                decision.to_e164 or to_raw, "refused", decision.rules, via,
                detail="; ".join(r.detail for r in decision.refusals),
            )
        return decision

    async def call(self, to_raw: str, from_raw: str, via: str, call_id_hint: str = "") -> CallAttempt:
        """Check every rule, then dial. Refusals never reach the dialer."""
        dialer = self.dialer(via)  # an unknown path is a usage error, before any decision
        hint = call_id_hint or new_call_id()
        decision = self.check(to_raw, from_raw, via)
        if not decision.allowed:
            return CallAttempt(decision, None, hint)
        assert decision.to_e164 is not None and decision.from_e164 is not None
        return CallAttempt(decision, await self.dial_checked(dialer, decision, hint), hint)

    async def dial_checked(self, dialer: Dialer, decision: Decision, hint: str) -> PlacementResult:
        """Dial a number the gate has just allowed (campaigns split check and dial for pacing)."""
        if not decision.allowed or decision.to_e164 is None or decision.from_e164 is None:
            raise ValueError("dial_checked needs an allowed decision")
        self.store.audit(decision.to_e164, "allowed", [], dialer.name, call_id=hint)
        result = await dialer.place(decision.to_e164, decision.from_e164, hint)
        # Both rows carry our call id (how a restarted campaign asks what became of it); the
        # provider's own id goes into the detail.
        provider_id = f"provider call {result.call_id}" if result.call_id and result.call_id != hint else ""
        self.store.audit(
            decision.to_e164, "placed" if result.ok else result.status, [], dialer.name,
            call_id=hint, detail="; ".join(p for p in (result.detail, provider_id) if p),
        )
        return result
