"""Start `voice-bridge xml-server` as a subprocess on a free port (bounded in time)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.devtools.procs import REPO, VOICE_BRIDGE


@dataclass
class XmlServer:
    proc: subprocess.Popen[str]
    port: int
    log_lines: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return "\n".join(self.log_lines)


@contextlib.contextmanager
def run_xml_server(
    config: Path, env: dict[str, str] | None = None, ready_timeout: float = 20.0
) -> Iterator[XmlServer]:
    cmd = [str(VOICE_BRIDGE), "xml-server", "--config", str(config), "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO)
    lines: list[str] = []
    port: list[int] = []
    ready = threading.Event()

    def pump(stream: object, watch: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip())
            if watch and line.startswith("READY xml_port="):
                port.append(int(line.split("=", 1)[1]))
                ready.set()

    threads = [threading.Thread(target=pump, args=(proc.stdout, True), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, False), daemon=True)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while not ready.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"xml-server did not start (rc={proc.poll()}):\n" + "\n".join(lines))
        yield XmlServer(proc, port[0], lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for t in threads:
            t.join(2)
