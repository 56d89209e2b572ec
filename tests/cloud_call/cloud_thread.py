"""FakeCloud on its own event loop in a background thread.

The daemon under test is another process, so the fakes cannot share the test's loop (a
synchronous test blocks it while SIPp runs). Everything that touches the fakes' state while
they serve goes through ``do()``, which runs on the fakes' loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from devkit.fakes import FakeCloud
from devkit.fakes.control import Faults

T = TypeVar("T")


class CloudThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-cloud", daemon=True)
        self.cloud: FakeCloud | None = None

    def start(self) -> FakeCloud:
        self._thread.start()
        cloud = FakeCloud()
        asyncio.run_coroutine_threadsafe(cloud.start(), self.loop).result(10)
        self.cloud = cloud
        return cloud

    def stop(self) -> None:
        if self.cloud is not None:
            asyncio.run_coroutine_threadsafe(self.cloud.stop(), self.loop).result(10)
            self.cloud = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def do(self, fn: Callable[[FakeCloud], T], limit_s: float = 10.0) -> T:
        """Run ``fn(cloud)`` on the fakes' loop and return its result."""
        cloud = self.cloud
        assert cloud is not None, "start() first"
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn(cloud))
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(limit_s)

    def reset(self) -> None:
        """Fresh scripts, faults and journals between calls (the daemon keeps running)."""

        def clear(cloud: FakeCloud) -> None:
            for fake in (cloud.deepgram, cloud.openai, cloud.elevenlabs):
                fake.journal.clear()
                fake.faults = Faults()
            cloud.elevenlabs.ws_faults = Faults()
            cloud.elevenlabs.ws_drop_text = None
            cloud.deepgram.script.clear()
            cloud.openai.script.clear()

        self.do(clear)
