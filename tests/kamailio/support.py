"""Kamailio as a record-routing proxy in front of the daemon, for tests: record_route.cfg filled
in for a free port and run by devkit.kamailio's runner (restartable on the same port)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bridge.simulator.procs import free_port
from devkit.kamailio import Kamailio, modules_dir, running, tcp_listening_and_forked

CONFIG = Path(__file__).parent / "record_route.cfg"


@contextlib.contextmanager
def kamailio_proxy(workdir: Path, daemon_port: int, daemon_transport: str = "udp") -> Iterator[Kamailio]:
    """The proxy on ``port`` (UDP and TCP), relaying to the daemon over ``daemon_transport``."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "kamailio.cfg"
    text = CONFIG.read_text()
    for key, value in (("PORT", port), ("DAEMON_PORT", daemon_port),
                       ("DAEMON_TRANSPORT", daemon_transport), ("MODULES", modules_dir())):
        text = text.replace(f"@@{key}@@", str(value))
    config.write_text(text)
    args = ["-P", str(workdir / "kamailio.pid"), "-m", "32", "-M", "4"]
    with running(Kamailio(config, workdir, port, args, ready=tcp_listening_and_forked)) as proxy:
        yield proxy
