"""Run Kamailio (Debian `kamailio`) on loopback for tests and benchmarks: one runner for the
shipped front (deploy/kamailio/kamailio.cfg, a dispatcher list naming the daemons given) and for
any other configuration a test brings (tests/kamailio: a record-routing proxy). Foreground
(-DD -E), its own runtime directory, its output collected, stopped by the PID we started (never
by name), restartable on the same port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bridge.simulator.procs import REPO, free_port

CONFIG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
DISPATCHER_LIST = REPO / "deploy" / "kamailio" / "dispatcher.list"


def _tool(name: str) -> str:
    """``name`` on PATH, else Debian's /usr/sbin (not on a normal user's PATH)."""
    return shutil.which(name) or f"/usr/sbin/{name}"


def have_kamailio() -> bool:
    return all(shutil.which(t) is not None or Path(f"/usr/sbin/{t}").exists() for t in ("kamailio", "kamcmd"))


def modules_dir() -> str:
    """Debian's multiarch module directory (x86_64-linux-gnu, aarch64-linux-gnu, ...)."""
    found = [*sorted(Path("/usr/lib").glob("*/kamailio/modules")), Path("/usr/lib/kamailio/modules")]
    return f"{next((d for d in found if (d / 'tm.so').exists()), found[0])}/"


def check_config(*defines: str) -> subprocess.CompletedProcess[str]:
    """`kamailio -c`: parse the shipped configuration (and the modules it loads) only."""
    cmd = [_tool("kamailio"), "-c", "-f", str(CONFIG)]
    for d in defines:
        cmd += ["-A", d]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


class Kamailio:
    """One Kamailio process on ``host``:``port`` (127.0.0.1 by default): ``start()``, ``stop()``,
    ``start()`` again (same port, a new process), ``logs()``. ``ready`` says when it serves
    requests."""

    def __init__(
        self, config: Path, run_dir: Path, port: int, args: Sequence[str], ready: Callable[[Kamailio], bool],
        host: str = "127.0.0.1",
    ) -> None:
        self.config = config
        self.host = host  # where clients reach it
        self.run_dir = run_dir
        self.port = port
        self.args = list(args)
        self._ready = ready
        self.proc: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def logs(self) -> str:
        return "\n".join(self.log_lines)

    def start(self, ready_s: float = 20.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [_tool("kamailio"), "-f", str(self.config), "-DD", "-E", "-Y", str(self.run_dir), *self.args]
        # Its own session: if the main process dies hard, its children can still be found
        # (and only ours) by the process group we created.
        self.proc = proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self._reader = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_s
        while not self._ready(self):
            if proc.poll() is not None or time.monotonic() > deadline:
                rc = proc.poll()
                self.stop()
                raise RuntimeError(f"kamailio did not start (rc={rc}) in {ready_s} s:\n{self.logs()[-3000:]}")
            time.sleep(0.1)

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log_lines.append(line.rstrip())

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
def running(kamailio: Kamailio) -> Iterator[Kamailio]:
    kamailio.start()
    try:
        yield kamailio
    finally:
        kamailio.stop()


def tcp_listening_and_forked(kamailio: Kamailio) -> bool:
    """Kamailio opens its sockets before it forks its workers: the TCP one answering and the
    process table logged mean the configuration loaded and the workers are up."""
    with contextlib.suppress(OSError), socket.create_connection((kamailio.host, kamailio.port), timeout=0.5):
        return "main(): processes" in kamailio.logs()
    return False


class Front(Kamailio):
    """The shipped front, with its control socket for kamcmd."""

    def __init__(
        self, run_dir: Path, port: int, ctl: str, args: Sequence[str], host: str = "127.0.0.1",
        config: Path = CONFIG,
    ) -> None:
        # another configuration (an older copy, to compare) may answer its own OPTIONS otherwise
        any_answer = config != CONFIG
        super().__init__(
            config, run_dir, port, args, host=host,
            ready=lambda k: options_answered(k.port, host=k.host, any_answer=any_answer),
        )
        self.ctl = ctl

    def rpc(self, *args: str) -> str:
        out = subprocess.run([_tool("kamcmd"), "-s", self.ctl, *args], capture_output=True, text=True,
                             timeout=10)
        return out.stdout + out.stderr

    def destinations_by_address(self) -> dict[str, str]:
        """The "host:port" of each daemon -> its dispatcher flags (daemons on other hosts may share
        a port number)."""
        out: dict[str, str] = {}
        uri = None
        for line in self.rpc("dispatcher.list").splitlines():
            line = line.strip()
            if line.startswith("URI:"):
                uri = line.split(":", 1)[1].strip().removeprefix("sip:")
            elif line.startswith("FLAGS:") and uri is not None:
                out[uri] = line.split(":", 1)[1].strip()
        return out

    def destinations(self) -> dict[int, str]:
        """SIP port of each daemon -> its dispatcher flags ('AP' active+probing, 'IP' inactive...).
        Daemons on different addresses must have different ports (free_port gives that)."""
        out: dict[int, str] = {}
        port = None
        for line in self.rpc("dispatcher.list").splitlines():
            line = line.strip()
            if line.startswith("URI:"):
                port = int(line.rsplit(":", 1)[1])
            elif line.startswith("FLAGS:") and port is not None:
                out[port] = line.split(":", 1)[1].strip()
        return out


Destination = int | tuple[str, int]  # a daemon's SIP port on 127.0.0.1, or (address, port)


def _host_port(dest: Destination) -> str:
    host, port = dest if isinstance(dest, tuple) else ("127.0.0.1", dest)
    return f"{host}:{port}"


def dispatcher_list(sip_ports: Sequence[Destination], maxload: int = 0) -> str:
    return "".join(
        f"1 sip:{_host_port(d)} 8 0 duid=bridge-{i};maxload={maxload}\n" for i, d in enumerate(sip_ports, 1)
    )


def options_answered(
    port: int, timeout: float = 0.5, host: str = "127.0.0.1", any_answer: bool = False
) -> bool:
    """True once Kamailio on ``host`` answers an OPTIONS addressed to itself with 200 (with
    anything, if ``any_answer``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host if host.startswith("127.") else "0.0.0.0", 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        call_id = uuid.uuid4().hex
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{lport};branch=z9hG4bK{call_id[:12]};rport\r\n"
            f"From: <sip:probe@{host}>;tag={call_id[:8]}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (host, port))
        try:
            return s.recv(65535).startswith(b"SIP/2.0 " if any_answer else b"SIP/2.0 200")
        except OSError:
            return False


@contextlib.contextmanager
def run_front(
    workdir: Path,
    sip_ports: Sequence[Destination],
    *,
    probe_interval_s: int = 1,
    fr_timer_ms: int = 2000,
    pike_density: int = 1000,
    maxload: int = 0,
    children: int = 1,
    ready_timeout: float = 20.0,
    listen_ip: str | None = "127.0.0.1",
    address: str = "127.0.0.1",
    port: int = 0,
    dispatcher_file: Path | None = None,
    config: Path = CONFIG,
) -> Iterator[Front]:
    """Kamailio with the shipped configuration in front of the daemons on ``sip_ports`` (a
    port on 127.0.0.1, or (address, port): a daemon on another address, as on another host).

    ``listen_ip``: the address it binds (None: the file's own default, every address) and
    ``address`` where it is reached; ``port``: its SIP port (0: a free one on 127.0.0.1);
    ``dispatcher_file``: a list written by the caller (``sip_ports`` is then not used);
    ``config``: another configuration file than the shipped one (e.g. an older copy).

    One worker by default: replies then leave in the order they came (with several workers a
    180 may overtake its 200, which SIPp counts as a failed call although a real UA would not)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ds = dispatcher_file or workdir / "dispatcher.list"
    if dispatcher_file is None:
        ds.write_text(dispatcher_list(sip_ports, maxload))
    port = port or free_port()
    run_dir = workdir / "kamailio-run"
    ctl = f"unix:{run_dir}/ctl"
    args = [
        "-m", "64", "-M", "8",
        *(["-A", f"LISTEN_IP={listen_ip}"] if listen_ip else []),
        "-A", f"SIP_PORT={port}", "-A", f'DS_LIST="{ds}"',
        "-A", f'CTL_SOCKET="{ctl}"', "-A", f"PROBE_INTERVAL={probe_interval_s}",
        "-A", f"FR_TIMER={fr_timer_ms}", "-A", f"PIKE_DENSITY={pike_density}", "-A", f"CHILDREN={children}",
    ]  # fmt: skip
    front = Front(run_dir, port, ctl, args, host=address, config=config)
    front.start(ready_timeout)
    try:
        yield front
    finally:
        front.stop()
