"""systemd notifications (Type=notify): READY after SIP is bound, WATCHDOG pings, STOPPING.

A no-op outside systemd (no NOTIFY_SOCKET). Pings come from the event loop itself, so a loop
that is blocked stops pinging and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None
        self._watchdog: asyncio.Task[None] | None = None

    def _send(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def start_watchdog(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        if not self._enabled or not usec:
            return
        interval = max(int(usec) / 1_000_000 / 2, 0.5)
        self._watchdog = asyncio.get_running_loop().create_task(self._ping(interval))

    async def _ping(self, interval: float) -> None:
        while True:
            self._send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
