"""Our 2xx to an INVITE, retransmitted until the ACK (RFC 3261 §13.3.1.4), sans-I/O.

The INVITE transaction ends with the 2xx, so the UAS core resends it: over UDP at T1, 2*T1,
.. capped at T2; if no ACK came within the give-up time (64*T1) the dialog is over and the
caller of `handle_timer` sends a BYE. Over TCP nothing is resent, but the give-up time holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.sip.peer import Peer
from bridge.sip.server_tx import T2_S, Outgoing

DialogKey = tuple[str, str]  # (Call-ID, our tag)


@dataclass(slots=True)
class AckWait:
    key: DialogKey
    response: Outgoing  # our 2xx and where it goes
    initial: bool  # the dialog's first INVITE (not a re-INVITE)
    give_up_at: float
    resend_at: float | None
    interval: float


class AckWaits:
    def __init__(self, t1_s: float, give_up_s: float | None = None) -> None:
        self.t1 = t1_s
        self.give_up_s = give_up_s if give_up_s is not None else 64 * t1_s
        self._waits: dict[DialogKey, AckWait] = {}

    def __contains__(self, key: DialogKey) -> bool:
        return key in self._waits

    def __len__(self) -> int:
        return len(self._waits)

    def start(self, key: DialogKey, data: bytes, peer: Peer, dest: tuple[str, int], now: float, *,
              initial: bool) -> None:
        resend = now + self.t1 if peer.transport == "udp" else None
        self._waits[key] = AckWait(key, Outgoing(data, peer, dest), initial, now + self.give_up_s, resend,
                                   self.t1)

    def acked(self, key: DialogKey) -> AckWait | None:
        """The ACK came: stop resending. None when we were not waiting (a retransmitted ACK)."""
        return self._waits.pop(key, None)

    def cancel(self, key: DialogKey) -> None:
        self._waits.pop(key, None)

    def next_deadline(self) -> float | None:
        times = [t for w in self._waits.values() for t in (w.resend_at, w.give_up_at) if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> tuple[list[Outgoing], list[AckWait]]:
        """The 2xx to resend, and the waits that ran out (their dialogs end with a BYE)."""
        out: list[Outgoing] = []
        expired: list[AckWait] = []
        for key, w in list(self._waits.items()):
            if w.give_up_at <= now:
                del self._waits[key]
                expired.append(w)
                continue
            if w.resend_at is not None and w.resend_at <= now:
                out.append(w.response)
                w.interval = min(w.interval * 2, T2_S)
                w.resend_at = now + w.interval
        return out, expired

    def clear(self) -> None:
        self._waits.clear()
