"""Start the real daemon as a subprocess (bounded in time), find free ports, capture RTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout (cwd of the daemon)
VOICE_BRIDGE = Path(sys.executable).parent / "voice-bridge"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (/proc/<pid>/stat utime + stime)."""
    # the command name in parentheses may hold spaces: count the fields after its ")"
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` now, MiB (VmRSS); 0.0 if not reported."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u,
            ):
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def free_rtp_range(size: int = 40) -> tuple[int, int]:
    """A block of even-aligned UDP ports that are free right now (best effort)."""
    for _ in range(100):
        base = free_port() & ~1
        lo, hi = base, base + size
        if hi > 65000:
            continue
        try:
            socks = []
            for p in range(lo, hi):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return lo, hi - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free RTP range")


@dataclass
class Started:
    """A process started by ``started_process``: its READY line and everything it printed."""

    proc: subprocess.Popen[str]
    ready_line: str
    log_lines: list[str]


@contextlib.contextmanager
def started_process(
    cmd: list[str], env: dict[str, str], ready_prefix: str, ready_timeout: float, what: str
) -> Iterator[Started]:
    """Run ``cmd`` until it prints a line starting with ``ready_prefix``; on exit SIGTERM it
    (then SIGKILL) and join the pipe readers. Output is collected line by line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines: list[str] = []
    ready_line: list[str] = []
    ready = threading.Event()

    def pump(stream: object, watch: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip())
            if watch and line.startswith(ready_prefix):
                ready_line.append(line.strip())
                ready.set()

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, True), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, False), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while not ready.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become ready (rc={proc.poll()}):\n" + "\n".join(lines))
        yield Started(proc, ready_line[0], lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for t in threads:
            t.join(2)


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    sip_port: int
    http_port: int
    rtp_range: tuple[int, int]
    log_lines: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"  # SIP, RTP and HTTP are bound here

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def logs(self) -> str:
        return "\n".join(self.log_lines)


@contextlib.contextmanager
def run_daemon(
    tmp: Path,
    *extra: str,
    config: str = "",
    env: dict[str, str] | None = None,
    agent: str = "echo",
    ready_timeout: float = 30.0,
    rtp_ports: int = 40,
    host: str = "127.0.0.1",
) -> Iterator[Daemon]:
    """The daemon on ``host`` (another loopback address, e.g. 127.0.0.2, stands in for a
    daemon on another machine); its ports are chosen free on 127.0.0.1, which on loopback
    is almost always free on the other address too."""
    cfg = tmp / "daemon.toml"
    cfg.write_text(config or "")
    sip_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    lo, hi = free_rtp_range(rtp_ports)
    cmd = [
        str(VOICE_BRIDGE),
        "run",
        "--config",
        str(cfg),
        "--sip-listen",
        f"{host}:{sip_port}",
        "--rtp-ports",
        f"{lo}-{hi}",
        "--http-listen",
        f"{host}:{http_port}",
        "--agent",
        agent,
        *extra,
    ]
    full_env = {
        **os.environ,
        "ORT_DISABLE_TELEMETRY": "1",
        "VOICE_BRIDGE_LOGGING__FORMAT": "json",
        "VOICE_BRIDGE_DAEMON__DATA_DIR": str(tmp / "data"),
        # no load shedding unless a test asks for it: on a busy CI machine the loop may run
        # late for a second, and a test call refused with 503 would fail for the wrong reason
        "VOICE_BRIDGE_DAEMON__SHED_LOOP_LAG_MS": "0",
        **(env or {}),
    }
    with started_process(cmd, full_env, "READY ", ready_timeout, "daemon") as started:
        yield Daemon(started.proc, sip_port, http_port, (lo, hi), started.log_lines, host)


@contextlib.contextmanager
def capture_udp(path: Path, bpf_filter: str, interface: str = "lo",
                prefix: Sequence[str] = (), keep_root: bool = False, snaplen: int = 0,
                buffer_kib: int | None = None) -> Iterator[Path]:
    """tcpdump on ``interface`` (loopback) with a capture filter, e.g. "udp port 4000" (root
    needed; CI is root). ``prefix`` runs it under another command (``ip netns exec HOST``);
    ``keep_root``: no privilege drop, for a capture directory only root may write.
    ``snaplen`` / ``buffer_kib``: tcpdump's -s / -B. In immediate mode its ring holds buffer /
    snaplen packets (2 MiB / 256 KiB: 8 with the defaults), so bursts of more packets than that
    are partly lost; a small snaplen and a larger buffer keep them."""
    stay = ["-Z", "root"] if keep_root else []
    buffer = ["-B", str(buffer_kib)] if buffer_kib else []
    proc = subprocess.Popen(
        [*prefix, "tcpdump", "-i", interface, *stay, *buffer, "--immediate-mode", "-U", "-n",
         "-s", str(snaplen),
         "-w", str(path), bpf_filter],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # tcpdump prints "listening on lo" once the capture is armed
        assert proc.stderr is not None
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"tcpdump on {' '.join(prefix) or interface} failed to start")
        yield path
    finally:
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
