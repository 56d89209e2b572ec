"""Emulated hosts on one Linux machine: network namespaces wired to one switch, for benches
that need the Kamailio front, the callers and each daemon on a different address, interface
and network stack (bench/kamailio_hosts.py). Root only.

Layout: a switch namespace holds a Linux bridge; every host namespace gets one veth pair,
its end named ``eth0`` with its own 10.x address, the other end on the bridge. Nothing is
created in the caller's own namespace, so the machine's interfaces and routes are untouched.
Only namespaces named by the ``Lan`` are ever created or deleted (a stale one from a run that
died is deleted before a new run).

A thread enters a host's stack with ``entered(name)``: sockets it opens there (and processes
it starts there) belong to that host; ``command(name, argv)`` starts a program on a host
with `ip netns exec` (which execs: the PID we get is the program's own)."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


@dataclass(frozen=True)
class Host:
    name: str  # the namespace's name, e.g. "vb-host1"
    address: str  # its eth0 address, e.g. "10.77.0.11"


@dataclass(frozen=True)
class Lan:
    """Hosts on one /24 behind one switch. ``delay_ms``: netem delay on every host's eth0
    (each way), if the kernel has netem; ``rate``: a tbf rate cap (e.g. "100mbit") or ""."""

    hosts: tuple[Host, ...]
    prefix: str = "vb-"
    prefix_len: int = 24
    delay_ms: float = 0.0
    rate: str = ""
    switch: str = field(default="")

    def __post_init__(self) -> None:
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names) or len({h.address for h in self.hosts}) != len(self.hosts):
            raise ValueError("host names and addresses must be unique")
        for h in self.hosts:
            if not h.name.startswith(self.prefix):
                raise ValueError(f"{h.name!r}: every namespace name starts with {self.prefix!r}")
            ipaddress.ip_interface(f"{h.address}/{self.prefix_len}")  # raises on a bad address
        if not self.switch:
            object.__setattr__(self, "switch", f"{self.prefix}lan")

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def namespaces(self) -> list[str]:
        return [self.switch, *(h.name for h in self.hosts)]


def lan(*names_and_addresses: tuple[str, str], delay_ms: float = 0.0, rate: str = "") -> Lan:
    return Lan(tuple(Host(n, a) for n, a in names_and_addresses), delay_ms=delay_ms, rate=rate)


def setup_commands(net: Lan) -> list[list[str]]:
    """The `ip` / `tc` commands that build ``net`` (netem and tbf come later, see ``build``)."""
    cmds = [["ip", "netns", "add", ns] for ns in net.namespaces]
    sw = net.switch
    cmds += [
        ["ip", "-n", sw, "link", "add", "br0", "type", "bridge"],
        ["ip", "-n", sw, "link", "set", "br0", "up"],
    ]
    for i, h in enumerate(net.hosts):
        port = f"p{i}"  # the switch side of this host's cable
        cmds += [
            ["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.name],
            ["ip", "-n", sw, "link", "set", port, "master", "br0"],
            ["ip", "-n", sw, "link", "set", port, "up"],
            ["ip", "-n", h.name, "addr", "add", f"{h.address}/{net.prefix_len}", "dev", "eth0"],
            ["ip", "-n", h.name, "link", "set", "eth0", "up"],
            ["ip", "-n", h.name, "link", "set", "lo", "up"],
        ]
    return cmds


def shaping_commands(net: Lan, host: Host, with_netem: bool) -> list[list[str]]:
    """netem delay (with a tbf rate cap under it), or the tbf cap alone, on ``host``'s eth0."""
    tc = ["ip", "netns", "exec", host.name, "tc", "qdisc", "add", "dev", "eth0"]
    tbf = ["tbf", "rate", net.rate, "burst", "64kb", "latency", "50ms"]
    if with_netem and net.delay_ms:
        cmds = [[*tc, "root", "handle", "1:", "netem", "delay", f"{net.delay_ms}ms"]]
        return cmds + ([[*tc, "parent", "1:1", "handle", "10:", *tbf]] if net.rate else [])
    return [[*tc, "root", *tbf]] if net.rate else []


def existing() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def teardown(net: Lan) -> list[str]:
    """Delete this Lan's namespaces that exist (their veths go with them); the names deleted."""
    gone = []
    present = existing()
    for ns in net.namespaces:
        if ns in present:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
            gone.append(ns)
    return gone


def build(net: Lan) -> dict[str, str]:
    """Delete a stale copy of ``net``, then create it. Returns what the links got: netem and
    tbf may be missing from the kernel (netem is a module many cloud kernels leave out); the
    error is reported, not raised, and the run goes on without that shaping."""
    if os.geteuid() != 0:
        raise PermissionError("network namespaces need root")
    teardown(net)
    _run_all(setup_commands(net))
    shaping: dict[str, str] = {}
    for h in net.hosts:
        try:
            _run_all(shaping_commands(net, h, with_netem=True))
            if net.delay_ms:
                shaping["netem"] = f"delay {net.delay_ms} ms each way on every host's eth0"
        except subprocess.CalledProcessError as err:
            shaping["netem"] = f"unavailable: {err.stderr.strip()}"
            _run_all(shaping_commands(net, h, with_netem=False))
        if net.rate:
            shaping["tbf"] = f"rate {net.rate} on every host's eth0"
    return shaping


def _run_all(cmds: list[list[str]]) -> None:
    for cmd in cmds:
        subprocess.run(cmd, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def built(net: Lan) -> Iterator[dict[str, str]]:
    try:
        yield build(net)
    finally:
        teardown(net)


def command(host: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run on ``host``: `ip netns exec` execs it, so its PID is the program's."""
    return ["ip", "netns", "exec", host, *argv]


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(host: str) -> Iterator[None]:
    """This thread in ``host``'s network stack until the block ends (other threads stay put;
    sockets opened meanwhile stay in ``host``'s stack after it)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"{NETNS_DIR}/{host}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
