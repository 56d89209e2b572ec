"""The seam between the outbound service and a way of placing calls (Plivo REST, SIP trunk)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

PlacementStatus = Literal["queued", "answered", "completed", "busy", "no-answer", "rejected", "failed"]
RETRYABLE: frozenset[str] = frozenset({"busy", "no-answer"})
# Reached the person (or the provider took the call and owns it from here).
REACHED: frozenset[str] = frozenset({"queued", "answered", "completed"})


@dataclass(frozen=True)
class PlacementResult:
    status: PlacementStatus
    call_id: str = ""  # Plivo request_uuid, or the SIP Call-ID
    detail: str = ""  # for people and the audit log; never the full number
    duration_s: float | None = None
    transcript_path: str = ""

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
