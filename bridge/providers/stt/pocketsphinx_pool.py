"""Decoder processes for the pocketsphinx STT, and a pool that keeps some warm between calls.

A decoder takes ~0.4 s of CPU and ~91 MiB to load, so a call should not wait for one: the
pool hands out an idle process at once, starts a new one when it has none (the stream can
send audio straight away: it waits in the pipe until the decoder is up), and keeps up to
``keep_idle`` processes ready after calls end.

Processes are started with ``subprocess.Popen`` and their pipes attached to the loop, not
with ``asyncio.create_subprocess_exec``: on Python 3.11, cancelling that call before its pipes
are connected waits forever for the child (a task cancelled at loop shutdown never ends).
Popen returns at once (vfork), and reaping is polled, so nothing here can block or hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from bridge.providers.base import ProviderError
from bridge.providers.stt import pocketsphinx_protocol as proto

log = logging.getLogger(__name__)

PROVIDER = "pocketsphinx"
_WORKER_MODULE = "bridge.providers.stt.pocketsphinx_worker"
_DRAIN_ABOVE = 1 << 16  # bytes queued for the worker before send() waits (4 s of audio)
_READY_TIMEOUT_S = 30.0  # loading takes ~0.4 s; generous for a busy 2-core box
_EXIT_GRACE_S = 2.0  # after stdin closes, how long a worker may take to exit before SIGKILL
_REAP_POLL_S = 0.01
_PROJECT_ROOT = str(Path(__file__).resolve().parents[3])  # the tree holding the bridge package


class _WorkerOutput(asyncio.Protocol):
    """Reads the worker's stdout: parses messages as bytes arrive."""

    def __init__(self) -> None:
        self.parser = proto.MessageParser()
        self.messages: deque[proto.Message] = deque()
        self.closed = False
        self.garbage: proto.ProtocolError | None = None
        self._wakeup = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        if self.garbage is not None:
            return
        try:
            self.messages.extend(self.parser.feed(data))
        except proto.ProtocolError as exc:
            self.garbage = exc
        self._wakeup.set()

    def eof_received(self) -> bool:
        self.closed = True
        self._wakeup.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wakeup.set()

    async def wait(self) -> None:
        await self._wakeup.wait()
        self._wakeup.clear()


class _WorkerInput(asyncio.BaseProtocol):
    """Flow control for the worker's stdin: ``drain()`` waits while the pipe is full."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._writable.set()

    async def drain(self) -> None:
        await self._writable.wait()


class DecoderProcess:
    """One worker process holding one decoder; used by one stream at a time."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.WriteTransport,
        stdin_proto: _WorkerInput,
        stdout: asyncio.ReadTransport,
        stdout_proto: _WorkerOutput,
    ) -> None:
        self._popen = popen
        self._stdin = stdin
        self._stdin_proto = stdin_proto
        self._stdout = stdout
        self._out = stdout_proto
        self.loop = asyncio.get_running_loop()
        self.ready = False  # True once its READY has been read

    @classmethod
    async def spawn(cls, args: list[str]) -> DecoderProcess:
        """Start a worker. Raises OSError if it cannot be started."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH", "")) if p)
        # Popen in a coroutine on purpose: it returns in about a millisecond (vfork + exec)
        popen = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", _WORKER_MODULE, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )  # fmt: skip
        assert popen.stdin is not None and popen.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            stdin, stdin_proto = await loop.connect_write_pipe(_WorkerInput, popen.stdin)
            try:
                stdout, stdout_proto = await loop.connect_read_pipe(_WorkerOutput, popen.stdout)
            except BaseException:
                stdin.close()
                raise
        except BaseException:  # including cancellation: never leave the child running
            popen.kill()
            popen.stdin.close()
            popen.stdout.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(0.5)  # SIGKILLed: it is gone in microseconds
            raise
        stdin.set_write_buffer_limits(high=_DRAIN_ABOVE)
        return cls(popen, stdin, stdin_proto, stdout, stdout_proto)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None and not self._out.closed and self.loop is asyncio.get_running_loop()

    def write(self, kind: bytes, payload: bytes = b"") -> None:
        if self._stdin.is_closing() or self._stdin_proto.lost or self._popen.poll() is not None:
            raise ProviderError(PROVIDER, "decoder process is gone")
        self._stdin.write(proto.encode(kind, payload))

    async def drain_if_needed(self) -> None:
        if self._stdin.get_write_buffer_size() > _DRAIN_ABOVE:
            await self._stdin_proto.drain()
            if self._stdin_proto.lost:
                raise ProviderError(PROVIDER, "decoder process is gone")

    async def read(self) -> proto.Message | None:
        """The next message from the worker; None once it has exited (or sent garbage)."""
        while True:
            if self._out.garbage is not None:
                log.error("pocketsphinx worker %d sent garbage: %s", self.pid, self._out.garbage)
                self.kill()
                return None
            if self._out.messages:
                return self._out.messages.popleft()
            if self._out.closed:
                return None
            await self._out.wait()

    async def wait_ready(self) -> None:
        """Read up to READY; ProviderError if the worker failed or died first."""
        while not self.ready:
            msg = await self.read()
            if msg is None:
                raise ProviderError(PROVIDER, "decoder process exited while starting")
            if msg.kind == proto.ERROR:
                raise ProviderError(PROVIDER, msg.payload.decode(errors="replace"), retryable=False)
            self.ready = msg.kind == proto.READY

    def kill(self) -> None:
        """SIGKILL now and release the pipes (synchronous; reaping happens in ``stop``)."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.kill()
        with contextlib.suppress(RuntimeError):  # the transports' loop may already be closed
            if not self._stdin_proto.lost:  # a transport that has finished closing has no loop
                self._stdin.abort()
            self._stdout.close()

    async def stop(self) -> None:
        """Close its stdin (it exits at EOF), kill it if it lingers, and reap it. Bounded."""
        if not self._stdin.is_closing():
            self._stdin.close()
        await self._reap(_EXIT_GRACE_S)
        if self._popen.poll() is None:
            log.warning("pocketsphinx worker %d did not exit at EOF: killing it", self.pid)
            self.kill()
            await self._reap(_EXIT_GRACE_S)
        self._stdout.close()

    async def _reap(self, timeout_s: float) -> None:
        # Polled rather than waited on: a blocking waitpid would stall the loop, and asyncio's
        # child watcher is what hangs on cancellation (see the module docstring).
        deadline = self.loop.time() + timeout_s
        while self._popen.poll() is None and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_REAP_POLL_S)


class DecoderPool:
    """Hands decoder processes to streams and keeps up to ``keep_idle`` warm ones.

    A spare is started whenever a take leaves no idle decoder (so the next call does not
    wait); a decoder that comes back from a call is kept while fewer than ``keep_idle`` are
    idle, and handed out first. With ``keep_idle >= 2`` back-to-back calls therefore reuse
    warm decoders instead of loading a new one per call.
    """

    def __init__(self, worker_args: list[str], keep_idle: int) -> None:
        self._args = worker_args
        self.keep_idle = keep_idle
        self._idle: list[DecoderProcess] = []  # the end of the list is handed out first
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def take(self) -> DecoderProcess:
        if self._closed:
            raise ProviderError(PROVIDER, "provider is closed", retryable=False)
        worker: DecoderProcess | None = None
        while self._idle and worker is None:
            candidate = self._idle.pop()
            if candidate.alive:
                worker = candidate
            else:  # died, or belongs to an event loop that is gone
                candidate.kill()
        if worker is None:
            try:
                worker = await DecoderProcess.spawn(self._args)
            except OSError as exc:
                raise ProviderError(PROVIDER, f"cannot start decoder process: {exc}") from exc
        if not self._idle and self._starting == 0:
            self._start_spares(1)
        return worker

    async def give_back(self, worker: DecoderProcess) -> None:
        if not self._closed and worker.alive and worker.ready and len(self._idle) < self.keep_idle:
            self._idle.append(worker)
        else:
            await worker.stop()

    async def prewarm(self) -> None:
        """Start ``keep_idle`` decoders now and wait until they are loaded (daemon start-up)."""
        self._start_spares(self.keep_idle - len(self._idle) - self._starting)
        await self.settled()

    async def settled(self) -> None:
        """Wait until no spare is still starting."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _start_spares(self, count: int) -> None:
        for _ in range(min(count, self.keep_idle)):
            if self._closed:
                return
            self._starting += 1
            task = asyncio.get_running_loop().create_task(self._start_spare())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start_spare(self) -> None:
        worker: DecoderProcess | None = None
        try:
            worker = await DecoderProcess.spawn(self._args)
            await asyncio.wait_for(worker.wait_ready(), _READY_TIMEOUT_S)
        except (OSError, ProviderError, TimeoutError) as exc:
            log.warning("pocketsphinx: spare decoder failed to start: %s", exc)
            if worker is not None:
                await worker.stop()
            return
        except asyncio.CancelledError:  # the pool is closing
            if worker is not None:
                worker.kill()
            raise
        finally:
            self._starting -= 1
        if self._closed or len(self._idle) >= self.keep_idle:
            await worker.stop()
        else:
            self._idle.insert(0, worker)  # decoders back from a call go out first

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        idle, self._idle = self._idle, []
        here = asyncio.get_running_loop()
        await asyncio.gather(*(w.stop() for w in idle if w.loop is here))
        for w in idle:
            if w.loop is not here:
                w.kill()
