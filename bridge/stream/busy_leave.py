"""When a daemon sharing the stream port (SO_REUSEPORT) steps out of the port's group and back.

The kernel spreads new connections over the group's listeners by a hash of the connection, not
by load: a daemon at capacity (or shedding load) still gets its share and answers 503, and
Plivo does not retry a stream, so the call has no stream while another daemon had room. So a
busy daemon LEAVES the group (closes its listening socket, keeps its streams) and REJOINS it
(a new listening socket on the same address and port) once it has room again:

- leave: at once when ``busy()`` (at capacity, or the LoadMonitor sheds) and ANOTHER listener
  is in the group (``count_listeners``). The last listener never leaves: a stream URL nobody
  listens on is refused by the kernel (connection refused, no log, no metric) where a 503 is
  counted (``voice_bridge_calls_refused_total``), logged and alerted on; a single daemon
  therefore behaves exactly as without this rule;
- rejoin: once it has not been busy for ``rejoin_after_s`` (the LoadMonitor's own hysteresis
  comes first: it stops shedding only at half the lag threshold / 10 CPU points under), so a
  daemon at the edge does not flap; and AT ONCE whenever the group is empty (the other daemon
  left too, crashed or restarts): never leave the port without a listener for longer than a
  check period.

Two busy daemons must not both read "2 listeners" and both go: the count and the close are
made under a lock the daemons share (``try_group_lock``), and after its close a daemon looks
again and rejoins at once if the group is empty (the other drained or died meanwhile); a rejoin
listens synchronously, so the port has a listener again before the event loop serves it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

Action = Literal["leave", "join"] | None
_ALONE_RECHECK_S = 0.2  # a lone busy listener reads /proc again at most this often (a 503 storm)


class BusyLeave:
    def __init__(self, enabled: bool, rejoin_after_s: float, busy: Callable[[], bool],
                 listeners: Callable[[], int | None]) -> None:
        self.enabled = enabled
        self.rejoin_after_s = rejoin_after_s
        self._busy = busy
        self._listeners = listeners  # the group's LISTEN sockets, ours included; None = unknown
        self._free_since: float | None = None
        self._alone_at: float | None = None  # when a busy check last found us the only listener
        self._alone_logged = False

    def step(self, listening: bool, now: float) -> Action:
        """What to do now, given whether our socket is in the group."""
        busy = self._busy()
        if busy:
            self._free_since = None
        elif self._free_since is None:
            self._free_since = now
        if listening:
            if not (self.enabled and busy):
                self._alone_logged = False
                self._alone_at = None
                return None
            if self._alone_at is not None and now - self._alone_at < _ALONE_RECHECK_S:
                return None
            count = self._listeners()
            if count is None or count < 2:
                self._alone_at = now
                if not self._alone_logged:
                    self._alone_logged = True
                    log.info("busy, but the only listener on the stream port: staying (503s)")
                return None
            self._alone_at = None
            return "leave"
        count = self._listeners()
        if count is None or count == 0:
            return "join"  # nobody would answer the stream URL: a 503 is better than a refusal
        if self._free_since is not None and now - self._free_since >= self.rejoin_after_s:
            return "join"
        return None

    def group_empty(self, others: bool = False) -> bool:
        """Nobody listening on the port (``others``: nobody but us, read while still in it)."""
        count = self._listeners()
        return count is None or count <= (1 if others else 0)
