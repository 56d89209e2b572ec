"""Run the shipped Kamailio front (deploy/kamailio/kamailio.cfg) on loopback for tests and
benchmarks: foreground (-DD -E), its own runtime directory and control socket, a dispatcher
list naming the daemons given, stopped by PID."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.devtools.procs import REPO, free_port

CONFIG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
DISPATCHER_LIST = REPO / "deploy" / "kamailio" / "dispatcher.list"


def have_kamailio() -> bool:
    return shutil.which("kamailio") is not None and shutil.which("kamcmd") is not None


def check_config(*defines: str) -> subprocess.CompletedProcess[str]:
    """`kamailio -c`: parse the shipped configuration (and the modules it loads) only."""
    cmd = ["kamailio", "-c", "-f", str(CONFIG)]
    for d in defines:
        cmd += ["-A", d]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@dataclass
class Front:
    proc: subprocess.Popen[str]
    port: int
    ctl: str
    log_lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        return "\n".join(self.log_lines)

    def rpc(self, *args: str) -> str:
        out = subprocess.run(["kamcmd", "-s", self.ctl, *args], capture_output=True, text=True, timeout=10)
        return out.stdout + out.stderr

    def destinations(self) -> dict[int, str]:
        """SIP port of each daemon -> its dispatcher flags ('AP' active+probing, 'IP' inactive...)."""
        out: dict[int, str] = {}
        port = None
        for line in self.rpc("dispatcher.list").splitlines():
            line = line.strip()
            if line.startswith("URI:"):
                port = int(line.rsplit(":", 1)[1])
            elif line.startswith("FLAGS:") and port is not None:
                out[port] = line.split(":", 1)[1].strip()
        return out


def dispatcher_list(sip_ports: list[int], maxload: int = 0) -> str:
    return "".join(
        f"1 sip:127.0.0.1:{p} 8 0 duid=bridge-{i};maxload={maxload}\n" for i, p in enumerate(sip_ports, 1)
    )


def options_answered(port: int, timeout: float = 0.5) -> bool:
    """True once Kamailio answers an OPTIONS addressed to itself."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        call_id = uuid.uuid4().hex
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{call_id[:12]};rport\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={call_id[:8]}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), ("127.0.0.1", port))
        try:
            return s.recv(65535).startswith(b"SIP/2.0 200")
        except OSError:
            return False


@contextlib.contextmanager
def run_front(
    workdir: Path,
    sip_ports: list[int],
    *,
    probe_interval_s: int = 1,
    fr_timer_ms: int = 2000,
    pike_density: int = 1000,
    maxload: int = 0,
    children: int = 1,
    ready_timeout: float = 20.0,
) -> Iterator[Front]:
    """Kamailio with the shipped configuration in front of the daemons on ``sip_ports``.

    One worker by default: replies then leave in the order they came (with several workers a
    180 may overtake its 200, which SIPp counts as a failed call although a real UA would not)."""
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "kamailio-run"
    run_dir.mkdir(exist_ok=True)
    ds = workdir / "dispatcher.list"
    ds.write_text(dispatcher_list(sip_ports, maxload))
    port = free_port()
    ctl = f"unix:{run_dir}/ctl"
    cmd = [
        "kamailio", "-f", str(CONFIG), "-DD", "-E", "-Y", str(run_dir), "-m", "64", "-M", "8",
        "-A", "LISTEN_IP=127.0.0.1", "-A", f"SIP_PORT={port}", "-A", f'DS_LIST="{ds}"',
        "-A", f'CTL_SOCKET="{ctl}"', "-A", f"PROBE_INTERVAL={probe_interval_s}",
        "-A", f"FR_TIMER={fr_timer_ms}", "-A", f"PIKE_DENSITY={pike_density}", "-A", f"CHILDREN={children}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while not options_answered(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not start (rc={proc.poll()}):\n" + "\n".join(lines))
        yield Front(proc, port, ctl, lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        reader.join(2)
