"""Kamailio (Debian `kamailio`) as a record-routing proxy in front of the daemon, for tests:
started in the foreground (-DD -E) on 127.0.0.1 with a free port, its own runtime directory
and pid file, stopped by the PID we started (never by name), restartable on the same port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bridge.devtools.procs import free_port

HERE = Path(__file__).parent
CONFIG = HERE / "record_route.cfg"


def have_kamailio() -> bool:
    return shutil.which("kamailio") is not None or Path("/usr/sbin/kamailio").exists()


def _binary() -> str:
    return shutil.which("kamailio") or "/usr/sbin/kamailio"


def _modules_dir() -> str:
    """Debian's multiarch module directory (x86_64-linux-gnu, aarch64-linux-gnu, ...)."""
    found = [*sorted(Path("/usr/lib").glob("*/kamailio/modules")), Path("/usr/lib/kamailio/modules")]
    return f"{next((d for d in found if (d / 'tm.so').exists()), found[0])}/"


class Kamailio:
    """One proxy instance: `port` (UDP and TCP), `logs()`, `stop()`, `start()` again."""

    def __init__(self, workdir: Path, daemon_port: int, daemon_transport: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "kamailio.cfg"
        text = CONFIG.read_text()
        for key, value in (("PORT", self.port), ("DAEMON_PORT", daemon_port),
                           ("DAEMON_TRANSPORT", daemon_transport), ("MODULES", _modules_dir())):
            text = text.replace(f"@@{key}@@", str(value))
        self.config.write_text(text)
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, ready_s: float = 20.0) -> None:
        cmd = [_binary(), "-DD", "-E", "-f", str(self.config), "-P", str(self.workdir / "kamailio.pid"),
               "-Y", str(self.workdir), "-m", "32", "-M", "4"]
        # Its own session: if the main process dies hard, its children can still be found
        # (and only ours) by the process group we created.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        proc = self.proc
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"kamailio exited {proc.returncode}:\n{self.logs()[-3000:]}")
            if self._listening():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"kamailio not listening after {ready_s} s:\n{self.logs()[-3000:]}")

    def _listening(self) -> bool:
        # Kamailio opens both sockets before it forks its workers: the TCP one answering means
        # the configuration loaded and the listeners are up.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return "main(): processes" in self.logs()
        return False

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.append(line.rstrip("\n"))

    def logs(self) -> str:
        return "\n".join(self._lines)

    def stop(self) -> None:
        """SIGTERM to the main process (it stops its workers and closes every connection);
        SIGKILL to the process group we created if it does not go in time."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a hard exit, if any
        if self._reader is not None:
            self._reader.join(5)


@contextlib.contextmanager
def kamailio_proxy(workdir: Path, daemon_port: int, daemon_transport: str = "udp") -> Iterator[Kamailio]:
    proxy = Kamailio(workdir, daemon_port, daemon_transport)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
