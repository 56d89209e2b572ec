"""The seam between the outbound service and a way of placing calls (Plivo REST, SIP trunk)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

# queued: the provider took the call and reports the outcome later (plivo-api callbacks).
# unavailable: the provider could not be reached or answered 5xx (transport trouble, retried
# with backoff); ``maybe_sent`` says whether the request may still have been acted on.
# lost (call finders only): the provider attempted the call, it is no longer live and there is
# no outcome (e.g. the daemon stopped mid-call); it may have rung, so it is never redialed.
PlacementStatus = Literal[
    "queued", "answered", "completed", "busy", "no-answer", "rejected", "failed", "machine", "unavailable",
    "lost",
]
RETRYABLE: frozenset[str] = frozenset({"busy", "no-answer"})
# Reached the person (or the provider took the call and owns it from here).
REACHED: frozenset[str] = frozenset({"queued", "answered", "completed", "machine"})
# A placement status as a campaign outcome (queued and unavailable are not outcomes).
OUTCOME_OF: dict[str, str] = {
    "answered": "answered", "completed": "answered", "busy": "busy", "no-answer": "no-answer",
    "rejected": "failed", "failed": "failed", "machine": "machine",
}


@dataclass(frozen=True)
class PlacementResult:
    status: PlacementStatus
    call_id: str = ""  # Plivo request_uuid, or the SIP Call-ID
    detail: str = ""  # for people and the audit log; never the full number
    duration_s: float | None = None
    transcript_path: str = ""
    maybe_sent: bool = False  # unavailable only: the provider may have got the request

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE

    @property
    def ok(self) -> bool:
        return self.status in REACHED


class Dialer(Protocol):
    name: str

    async def place(self, to_e164: str, from_e164: str, call_id_hint: str) -> PlacementResult:
        """Place one call. Only the compliance-checked service calls this."""
        ...


@dataclass(frozen=True)
class Sought:
    """A request that may have left: to whom, since when (epoch), with which call id of ours."""

    to_e164: str
    since_epoch: float
    hint: str
    call_id: str = ""  # the provider's id when it gave one (a placed call without an outcome)


@runtime_checkable
class CallFinder(Protocol):
    """A dialer whose provider can list calls: used after a crash to learn whether a request
    that may have left created a call (then the call is not placed again), and to settle a
    placed call whose outcome never arrived."""

    async def find_calls(self, wanted: list[Sought]) -> list[PlacementResult | None]:
        """For each request: the provider's call it created (its outcome when it ended,
        ``queued`` while it is queued or live, ``lost`` when it ended without an outcome), or
        None when there is none. Raises when the provider cannot be asked."""
        ...
