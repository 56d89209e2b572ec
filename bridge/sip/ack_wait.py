"""Our 2xx to an INVITE, retransmitted until the ACK (RFC 3261 §13.3.1.4), sans-I/O.

The INVITE transaction ends with the 2xx, so the UAS core resends it: over UDP at T1, 2*T1,
.. capped at T2; if no ACK came within the give-up time (64*T1) the dialog is over and the
caller of `handle_timer` sends a BYE. Over TCP nothing is resent, but the give-up time holds.
"""

from __future__ import annotations

import heapq
import itertools
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
        self._due: list[tuple[float, int, DialogKey]] = []  # a heap, as in server_tx.py
        self._seq = itertools.count()

    def _at(self, key: DialogKey, when: float) -> float:
        heapq.heappush(self._due, (when, next(self._seq), key))
        return when

    def _stale(self, when: float, key: DialogKey) -> bool:
        w = self._waits.get(key)
        return w is None or when not in (w.resend_at, w.give_up_at)

    def __contains__(self, key: DialogKey) -> bool:
        return key in self._waits

    def __len__(self) -> int:
        return len(self._waits)

    def start(self, key: DialogKey, data: bytes, peer: Peer, dest: tuple[str, int], now: float, *,
              initial: bool) -> None:
        resend = self._at(key, now + self.t1) if peer.transport == "udp" else None
        give_up = self._at(key, now + self.give_up_s)
        self._waits[key] = AckWait(key, Outgoing(data, peer, dest), initial, give_up, resend, self.t1)

    def acked(self, key: DialogKey) -> AckWait | None:
        """The ACK came: stop resending. None when we were not waiting (a retransmitted ACK)."""
        return self._waits.pop(key, None)

    def cancel(self, key: DialogKey) -> None:
        self._waits.pop(key, None)

    def hurry(self, key: DialogKey, give_up_at: float) -> None:
        """Give up on this ACK by ``give_up_at`` at the latest (shutdown: the 2xx is still
        resent until then)."""
        w = self._waits.get(key)
        if w is not None and give_up_at < w.give_up_at:
            w.give_up_at = self._at(key, give_up_at)

    def next_deadline(self) -> float | None:
        while self._due and self._stale(*self._due[0][::2]):
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None

    def handle_timer(self, now: float) -> tuple[list[Outgoing], list[AckWait]]:
        """The 2xx to resend, and the waits that ran out (their dialogs end with a BYE)."""
        out: list[Outgoing] = []
        expired: list[AckWait] = []
        while self._due and self._due[0][0] <= now:
            when, _, key = heapq.heappop(self._due)
            w = self._waits.get(key)
            if w is None or when not in (w.resend_at, w.give_up_at):
                continue  # acked, or superseded by a later wait of the dialog
            if w.give_up_at <= now:
                del self._waits[key]
                expired.append(w)
            elif w.resend_at is not None and w.resend_at <= now:
                out.append(w.response)
                w.interval = min(w.interval * 2, T2_S)
                w.resend_at = self._at(key, now + w.interval)
        return out, expired

    def clear(self) -> None:
        self._waits.clear()
        self._due.clear()
