"""Start `voice-bridge xml-server` as a subprocess on a free port (bounded in time)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.simulator.procs import VOICE_BRIDGE, started_process


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
    with started_process(cmd, {**os.environ, **(env or {})}, "READY xml_port=", ready_timeout,
                         "xml-server") as started:
        port = int(started.ready_line.split("=", 1)[1])
        yield XmlServer(started.proc, port, started.log_lines)
