"""The shipped Kamailio front with daemons on other hosts, emulated with Linux network
namespaces on this one machine; prints JSON figures. Root only.

    sudo .venv/bin/python bench/kamailio_hosts.py --calls 40

Hosts (each its own network namespace, network stack and eth0, on one switch):
  vb-front  10.77.0.1   Kamailio, deploy/kamailio/kamailio.cfg as shipped, without LISTEN_IP
                        as Debian's kamailio.service runs it (--listen-ip: 10.77.0.1); -A
                        gives the dispatcher list (the shipped one's format, one line per
                        host), the control socket, port 5060 and the shipped timer values
  vb-caller 10.77.0.10  SIPp callers (the carrier: Plivo's side)
  vb-host1  10.77.0.11  voice-bridge daemon (echo agent), SIP 5071, HTTP 8081
  vb-host2  10.77.0.12  voice-bridge daemon, the same ports on its own address

Four phases, each with its own SIPp run and a tcpdump on every host's eth0:
  spread   N calls with RTP: ok/failed, calls per daemon, RTP seen on each daemon's eth0
           straight from/to the caller (none on the front's), every BYE reaching a daemon
           from the front (record-routing), what the 200 OKs carried (Record-Route, Contact,
           SDP c=);
  sigterm  host1 gets SIGTERM while calls run: it answers OPTIONS 503 and the front takes
           it out; its live calls finish, new calls go to host2, none fails;
  sigkill  host1 (restarted) and host2 up, host2 gets SIGKILL mid-run: time until the
           front marks it down (probe interval + the probe's timeout), calls lost (only
           those live on it), then a batch that must all land on host1;
  daemon_bye  10 calls wait on host1, which gets SIGTERM and BYEs them at its 3 s drain
           timeout: the daemon's in-dialog requests must follow the Record-Route.

netem (link delay) is used when the kernel has it (``--delay-ms``); the JSON says whether it
was applied. Namespaces named vb-* by this bench are deleted at start (a stale run) and at
exit; processes are stopped by the PIDs this bench started. Not a pytest: the tests use
loopback only (tests/kamailio/test_hosts_config.py checks the substitution logic).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from sip_concurrency import sipp_counters  # noqa: E402

from bridge.simulator.procs import VOICE_BRIDGE, capture_udp, started_process  # noqa: E402
from bridge.simulator.sipp import SCENARIOS, _routed, media_scenario  # noqa: E402
from devkit import netns  # noqa: E402
from devkit.hosts import (  # noqa: E402
    DAEMON_HTTP_PORT,
    DAEMON_SIP_PORT,
    daemon_args,
    daemon_env,
    hosts_dispatcher_list,
)
from devkit.kamailio import CONFIG, DISPATCHER_LIST, Front, run_front  # noqa: E402

FRONT, CALLER, HOST1, HOST2 = "vb-front", "vb-caller", "vb-host1", "vb-host2"
ADDRESS = {FRONT: "10.77.0.1", CALLER: "10.77.0.10", HOST1: "10.77.0.11", HOST2: "10.77.0.12"}
SIP_FRONT = 5060
DAEMON_BYE_DRAIN_S = 3.0


# -- a daemon on a host -----------------------------------------------------------------------
@dataclass
class HostDaemon:
    host: str
    proc: subprocess.Popen[str]
    log_lines: list[str]
    started_at: float

    @property
    def address(self) -> str:
        return ADDRESS[self.host]

    @property
    def uri(self) -> str:
        return f"{self.address}:{DAEMON_SIP_PORT}"

    def get(self, path: str) -> tuple[int, str]:
        """GET on the daemon's HTTP port from another host (vb-caller), as a monitor on the LAN would."""
        with netns.entered(CALLER):
            try:
                with urllib.request.urlopen(
                    f"http://{self.address}:{DAEMON_HTTP_PORT}{path}", timeout=3
                ) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()

    def active_calls(self) -> int:
        try:
            return int(json.loads(self.get("/healthz")[1])["active_calls"])
        except (OSError, ValueError, KeyError):
            return -1


@contextlib.contextmanager
def host_daemon(tmp: Path, host: str, calls: int, drain_s: float = 30) -> Iterator[HostDaemon]:
    work = tmp / f"{host}-{time.monotonic_ns()}"
    work.mkdir()
    cfg = work / "daemon.toml"
    cfg.write_text("")
    env = {
        **os.environ,
        "ORT_DISABLE_TELEMETRY": "1",
        "VOICE_BRIDGE_LOGGING__FORMAT": "json",
        "VOICE_BRIDGE_LOGGING__LEVEL": "INFO",
        "VOICE_BRIDGE_DAEMON__DATA_DIR": str(work / "data"),
        "VOICE_BRIDGE_DAEMON__SHED_LOOP_LAG_MS": "0",
        "VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": str(drain_s),
        **daemon_env(ADDRESS[host], ADDRESS[FRONT], calls),
    }
    cmd = netns.command(
        host,
        [
            str(VOICE_BRIDGE),
            "run",
            "--config",
            str(cfg),
            *daemon_args(ADDRESS[host], calls),
            "--agent",
            "echo",
        ],
    )
    try:
        with started_process(cmd, env, "READY ", 60, f"daemon on {host}") as started:
            yield HostDaemon(host, started.proc, started.log_lines, time.time())
    finally:
        with contextlib.suppress(NameError):
            (work / "daemon.log").write_text("\n".join(started.log_lines))


def call_ends(daemon: HostDaemon) -> dict[str, int]:
    """How the daemon's calls ended so far ("dialog ended" log lines, by reason)."""
    reasons: Counter[str] = Counter()
    for line in list(daemon.log_lines):
        if '"dialog ended"' in line:
            with contextlib.suppress(ValueError, KeyError):
                reasons[str(json.loads(line)["reason"])] += 1
    return dict(reasons)


# -- captures ---------------------------------------------------------------------------------
def capture(host: str, path: Path) -> contextlib.AbstractContextManager[Path]:
    """tcpdump on ``host``'s eth0 (every UDP packet it sends or receives)."""
    return capture_udp(path, "udp", interface="eth0", prefix=netns.command(host, []), keep_root=True)


@dataclass(frozen=True)
class Packet:
    t: float
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes


def read_packets(path: Path) -> list[Packet]:
    """IPv4/UDP packets of an Ethernet pcap, with their addresses."""
    data = path.read_bytes() if path.exists() else b""
    out: list[Packet] = []
    if len(data) < 24:
        return out
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[off : off + 16])
        off += 16
        ip = data[off + 14 : off + incl]
        off += incl
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, ulen = struct.unpack("!HHH", ip[ihl : ihl + 6])
        out.append(
            Packet(
                sec + usec / 1e6,
                socket.inet_ntoa(ip[12:16]),
                sport,
                socket.inet_ntoa(ip[16:20]),
                dport,
                ip[ihl + 8 : ihl + ulen],
            )
        )
    return out


def is_sip(p: Packet) -> bool:
    return p.sport in (SIP_FRONT, DAEMON_SIP_PORT) or p.dport in (SIP_FRONT, DAEMON_SIP_PORT)


def is_rtp(p: Packet) -> bool:
    return not is_sip(p) and len(p.data) >= 12 and p.data[0] >> 6 == 2 and not 200 <= p.data[1] <= 204


def header(data: bytes, name: str) -> str:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.decode(errors="replace").partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def start_line(p: Packet) -> str:
    return p.data.split(b"\r\n", 1)[0].decode(errors="replace")


def invites(packets: list[Packet], since: float = 0.0) -> set[str]:
    """Call-IDs of the INVITEs in a capture (a retransmission counts once)."""
    return {header(p.data, "Call-ID") for p in packets if p.t >= since and p.data.startswith(b"INVITE ")}


def answered(packets: list[Packet], code: str, method: str = "INVITE") -> set[str]:
    return {
        header(p.data, "Call-ID")
        for p in packets
        if p.data.startswith(f"SIP/2.0 {code}".encode()) and header(p.data, "CSeq").endswith(method)
    }


def caller_leg(front: list[Packet]) -> list[Packet]:
    """The front's SIP with the caller, from the front's eth0 (SIP only there: a capture that
    keeps up, where the caller's, full of RTP, may miss a packet on a busy machine)."""
    return [p for p in front if ADDRESS[CALLER] in (p.src, p.dst)]


def outcomes(caller: list[Packet], at: float, until: float = float("inf")) -> dict[str, int]:
    """From ``caller_leg``: calls set up before / after ``at`` (first INVITE sent; up to
    ``until``) and how many of each did not complete (no 200 to the INVITE, or to the BYE)."""
    first: dict[str, float] = {}
    for p in caller:
        if p.data.startswith(b"INVITE "):
            first.setdefault(header(p.data, "Call-ID"), p.t)
    ok_invite, ok_bye = answered(caller, "200"), answered(caller, "200", "BYE")
    before = [c for c, t in first.items() if t < at]
    after = [c for c, t in first.items() if at <= t < until]
    return {
        "calls_started_before": len(before),
        "of_those_not_completed": sum(1 for c in before if c not in ok_invite or c not in ok_bye),
        "calls_started_after": len(after),
        "of_those_not_answered": sum(1 for c in after if c not in ok_invite),
        "of_those_not_completed_after": sum(1 for c in after if c not in ok_invite or c not in ok_bye),
    }


def late_provisionals(caller: list[Packet]) -> int:
    """Calls whose 180/183 reached the caller after their 200 (on ``caller_leg``): with
    several UDP workers the front may forward the daemon's back-to-back 180 and 200 in the
    other order. A UA drops a 1xx after the 2xx; SIPp's scenario takes it as a jump back to
    its 180 step, waits for a second 200, plays no RTP and sends no BYE, and the daemon
    ends the call at its RTP timeout (30 s): a failed call that is SIPp's, not the front's."""
    ok_at: dict[str, float] = {}
    late: set[str] = set()
    for p in caller:
        if p.dst != ADDRESS[CALLER] or not header(p.data, "CSeq").endswith("INVITE"):
            continue
        cid = header(p.data, "Call-ID")
        if p.data.startswith(b"SIP/2.0 200"):
            ok_at.setdefault(cid, p.t)
        elif p.data.startswith((b"SIP/2.0 180", b"SIP/2.0 183")) and cid in ok_at:
            late.add(cid)
    return len(late)


def setup_times(caller: list[Packet], call_ids: set[str]) -> list[float]:
    """First INVITE to its 200, seconds, on ``caller_leg``, for each of ``call_ids`` answered."""
    sent: dict[str, float] = {}
    done: dict[str, float] = {}
    for p in caller:
        cid = header(p.data, "Call-ID")
        if cid not in call_ids:
            continue
        if p.data.startswith(b"INVITE "):
            sent.setdefault(cid, p.t)
        elif p.data.startswith(b"SIP/2.0 200") and header(p.data, "CSeq").endswith("INVITE"):
            done.setdefault(cid, p.t)
    return sorted(round(done[c] - sent[c], 2) for c in done if c in sent)


# -- one phase's callers ------------------------------------------------------------------------
def sipp(workdir: Path, scenario: Path, calls: int, rate: float, timeout_s: float) -> subprocess.Popen[bytes]:
    workdir.mkdir(exist_ok=True)
    cmd = netns.command(CALLER, [
        "sipp", f"{ADDRESS[FRONT]}:{SIP_FRONT}", "-sf", str(scenario), "-m", str(calls), "-l", str(calls),
        "-r", str(rate), "-nostdin", "-i", ADDRESS[CALLER], "-p", "5080", "-mi", ADDRESS[CALLER],
        "-mp", "30000", "-timeout", f"{int(timeout_s)}s", "-trace_stat", "-stf", str(workdir / "stat.csv"),
        "-trace_err", "-error_file", str(workdir / "errors.log")])  # fmt: skip
    with (workdir / "stderr.txt").open("wb") as err:
        return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)


def finish(proc: subprocess.Popen[bytes], workdir: Path, limit_s: float) -> dict[str, Any]:
    try:
        proc.wait(limit_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    counters = sipp_counters(workdir)
    errors = (workdir / "errors.log").read_text(errors="replace") if (workdir / "errors.log").exists() else ""
    return {
        "ok": counters.get("SuccessfulCall", 0),
        "failed": counters.get("FailedCall", 0),
        "sipp_failures": {k: v for k, v in counters.items() if k.startswith("Failed") and k != "FailedCall"},
        "sipp_rc": proc.returncode,
        "sipp_errors_head": errors.splitlines()[:6],
        # SIPp itself starved of CPU (its timers ran > 500 ms late): the box, not the calls
        "sipp_watchdog_trips": errors.count("watchdog timer"),
    }


def wait_for(cond: Any, limit_s: float, step_s: float = 0.05) -> float | None:
    """Seconds until ``cond()`` held, None if it did not within ``limit_s``."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if cond():
            return time.monotonic() - start
        time.sleep(step_s)
    return None


def flags(front: Front, daemon: HostDaemon) -> str:
    return front.destinations_by_address().get(daemon.uri, "")


# -- the phases --------------------------------------------------------------------------------
def media(tmp: Path, seconds: float) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    return media_scenario(tmp, "PCMU", pcm, pause_ms=int(seconds * 1000), per_call_ports=True, routed=True)


def wire(caps: dict[str, list[Packet]], daemons: list[HostDaemon]) -> dict[str, Any]:
    """What the captures on each host's eth0 show about media and in-dialog routing."""
    caller, front = ADDRESS[CALLER], ADDRESS[FRONT]
    out: dict[str, Any] = {}
    for d in daemons:
        pk = caps[d.host]
        rtp_in = [p for p in pk if is_rtp(p) and p.src == caller and p.dst == d.address]
        rtp_out = [p for p in pk if is_rtp(p) and p.src == d.address and p.dst == caller]
        byes = [p for p in pk if p.data.startswith(b"BYE ") and p.dst == d.address]
        oks = [
            p
            for p in pk
            if p.src == d.address
            and p.data.startswith(b"SIP/2.0 200")
            and header(p.data, "CSeq").endswith("INVITE")
        ]
        sdp_c = Counter(
            line.decode() for p in oks for line in p.data.split(b"\r\n") if line.startswith(b"c=")
        )
        out[d.host] = {
            "invites": len(invites(pk)),
            "rtp_packets_caller_to_daemon": len(rtp_in),
            "rtp_packets_daemon_to_caller": len(rtp_out),
            "rtp_calls_both_ways": len({p.sport for p in rtp_in} & {p.dport for p in rtp_out}),
            "rtp_from_or_to_front": sum(1 for p in pk if is_rtp(p) and front in (p.src, p.dst)),
            "byes_received": len({header(p.data, "Call-ID") for p in byes}),
            "byes_from_front": len({header(p.data, "Call-ID") for p in byes if p.src == front}),
            "byes_from_elsewhere": len({header(p.data, "Call-ID") for p in byes if p.src != front}),
            "sip_peers": sorted({p.src for p in pk if is_sip(p) and p.dst == d.address}),
            "sdp_c_in_200": dict(sdp_c),
            "contact_in_200": dict(Counter(header(p.data, "Contact") for p in oks)),
        }
    fk = caps[FRONT]
    to_caller = [
        p
        for p in fk
        if p.dst == caller and p.data.startswith(b"SIP/2.0 200") and header(p.data, "CSeq").endswith("INVITE")
    ]
    out[FRONT] = {
        "rtp_packets": sum(1 for p in fk if is_rtp(p)),
        "record_route_to_caller": dict(Counter(header(p.data, "Record-Route") for p in to_caller)),
        "record_route_is_the_front": bool(to_caller)
        and all(header(p.data, "Record-Route") == f"<sip:{front};lr>" for p in to_caller),
        "byes_from_caller": len(
            {header(p.data, "Call-ID") for p in fk if p.data.startswith(b"BYE ") and p.src == caller}
        ),
    }
    ck = caps[CALLER]
    out[CALLER] = {
        "sip_peers": sorted({p.src for p in ck if is_sip(p) and p.dst == caller}),
        "rtp_peers": sorted({p.src for p in ck if is_rtp(p) and p.dst == caller}),
    }
    return out


@contextlib.contextmanager
def captured(tmp: Path, name: str) -> Iterator[dict[str, list[Packet]]]:
    """tcpdump on every host's eth0 for the block; the packets, by host, after it."""
    caps: dict[str, list[Packet]] = {}
    paths = {h: tmp / f"{name}-{h}.pcap" for h in ADDRESS}
    with contextlib.ExitStack() as stack:
        for h, path in paths.items():
            stack.enter_context(capture(h, path))
        yield caps
    for h, path in paths.items():
        caps[h] = read_packets(path)


def phase_spread(
    args: argparse.Namespace, tmp: Path, front: Front, daemons: list[HostDaemon]
) -> dict[str, Any]:
    scenario = media(tmp, args.seconds)
    with captured(tmp, "spread") as caps:
        proc = sipp(tmp / "spread", scenario, args.calls, args.rate, args.seconds + 60)
        result = finish(proc, tmp / "spread", args.calls / args.rate + args.seconds + 90)
        wait_for(lambda: all(d.active_calls() == 0 for d in daemons), 20, 0.2)
    return {
        "calls": args.calls,
        **result,
        "calls_per_daemon": {d.host: len(invites(caps[d.host])) for d in daemons},
        "calls_with_1xx_after_200": late_provisionals(caller_leg(caps[FRONT])),
        "wire": wire(caps, daemons),
        "daemon_call_ends_so_far": {d.host: call_ends(d) for d in daemons},
    }


def phase_sigterm(
    args: argparse.Namespace, tmp: Path, front: Front, daemons: list[HostDaemon]
) -> dict[str, Any]:
    one, two = daemons
    scenario = media(tmp, args.seconds)
    calls = args.calls
    with captured(tmp, "sigterm") as caps:
        proc = sipp(tmp / "sigterm", scenario, calls, args.rate / 2, args.seconds + 60)
        wait_for(lambda: one.active_calls() >= 3, 30, 0.1)
        live = one.active_calls()
        signalled = time.time()
        one.proc.send_signal(signal.SIGTERM)
        out_s = wait_for(lambda: not flags(front, one).startswith("A"), args.probe_interval * 3 + 5)
        try:
            rc: int | None = one.proc.wait(60)
        except subprocess.TimeoutExpired:
            rc = None
        exited_s = time.time() - signalled
        result = finish(proc, tmp / "sigterm", calls / (args.rate / 2) + args.seconds + 90)
    k1, k2 = caps[one.host], caps[two.host]
    to_one_after = invites(k1, since=signalled)
    logs = "\n".join(one.log_lines)
    return {
        "calls": calls,
        **result,
        "live_on_host1_at_sigterm": live,
        "front_marked_host1_out_after_s": None if out_s is None else round(out_s, 2),
        "front_flags_host1_after": flags(front, one),
        "host1_exit_code": rc,
        "host1_exited_after_s": round(exited_s, 2),
        "host1_drain_timeout_logged": "drain timeout" in logs,
        "invites_to_host1_after_sigterm": len(to_one_after),
        "of_those_answered_503_by_host1": len(to_one_after & answered(k1, "503")),
        "invites_to_host2_after_sigterm": len(invites(k2, since=signalled)),
        "calls_per_daemon": {one.host: len(invites(k1)), two.host: len(invites(k2))},
        "calls_with_1xx_after_200": late_provisionals(caller_leg(caps[FRONT])),
        "caller_side_around_sigterm": outcomes(caller_leg(caps[FRONT]), signalled),
    }


def phase_sigkill(
    args: argparse.Namespace, tmp: Path, front: Front, daemons: list[HostDaemon]
) -> dict[str, Any]:
    survivor, victim = daemons
    scenario = media(tmp, args.seconds)
    calls = args.calls
    with captured(tmp, "sigkill") as caps:
        proc = sipp(tmp / "sigkill", scenario, calls, args.rate / 2, args.seconds + 60)
        wait_for(lambda: victim.active_calls() >= 3, 30, 0.1)
        live = victim.active_calls()
        killed = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        down_s = wait_for(
            lambda: flags(front, victim).startswith("I"), args.probe_interval + args.fr_timer_ms / 1000 + 10
        )
        first = finish(proc, tmp / "sigkill", calls / (args.rate / 2) + args.seconds + 90)
        then = time.time()
        after = sipp(tmp / "after-kill", media(tmp, 1.0), 20, args.rate, 60)
        second = finish(after, tmp / "after-kill", 90)
    kv, ks = caps[victim.host], caps[survivor.host]
    return {
        "calls": calls,
        **first,
        "live_on_killed_daemon": live,
        "front_marked_it_down_after_s": None if down_s is None else round(down_s, 2),
        "bound_s": args.probe_interval + args.fr_timer_ms / 1000,
        "invites_to_killed_after_kill": len(invites(kv, since=killed)),
        "setup_s_of_those": setup_times(caller_leg(caps[FRONT]), invites(kv, since=killed)),
        "invites_to_survivor_after_kill": len(invites(ks, since=killed)),
        "calls_with_1xx_after_200": late_provisionals(caller_leg(caps[FRONT])),
        "caller_side_around_kill": outcomes(caller_leg(caps[FRONT]), killed, then),
        "then_20_calls": second,
        "then_20_calls_on": {
            survivor.host: len(invites(ks, since=then)),
            victim.host: len(invites(kv, since=then)),
        },
    }


def phase_daemon_bye(tmp: Path, front: Front, daemon: HostDaemon) -> dict[str, Any]:
    """Calls that wait for the far end to hang up, on the one daemon left; it gets SIGTERM
    and, at its drain timeout, sends each a BYE: in-dialog requests from the daemon side must
    follow the Record-Route to the front and on to the caller."""
    calls = 10
    text = _routed((SCENARIOS / "uac_wait_bye.xml").read_text())
    scenario = tmp / "uac_wait_bye_routed.xml"
    scenario.write_text(text)
    caller, front_ip = ADDRESS[CALLER], ADDRESS[FRONT]
    with captured(tmp, "daemon-bye") as caps:
        proc = sipp(tmp / "daemon-bye", scenario, calls, 10, 60)
        wait_for(lambda: daemon.active_calls() >= calls, 20, 0.1)
        live = daemon.active_calls()
        daemon.proc.send_signal(signal.SIGTERM)
        result = finish(proc, tmp / "daemon-bye", DAEMON_BYE_DRAIN_S + 60)
        try:
            rc: int | None = daemon.proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
    kd, kc = caps[daemon.host], caps[CALLER]
    byes_out = [p for p in kd if p.data.startswith(b"BYE ") and p.src == daemon.address]
    return {
        "calls": calls,
        **result,
        "live_at_sigterm": live,
        "daemon_exit_code": rc,
        "byes_sent_by_daemon_to": dict(Counter(p.dst for p in byes_out)),
        "bye_route_headers": dict(Counter(header(p.data, "Route") for p in byes_out)),
        "byes_reaching_caller_from": dict(
            Counter(p.src for p in kc if p.data.startswith(b"BYE ") and p.dst == caller)
        ),
        "byes_answered_200_at_daemon": len(answered(kd, "200", "BYE")),
        "calls_with_1xx_after_200": late_provisionals(caller_leg(caps[FRONT])),
        "front": front_ip,
    }


def checks(report: dict[str, Any]) -> dict[str, bool]:
    """The claims, one boolean each, from the figures above (calls failed are reported, not
    judged here: on a busy box SIPp itself loses calls, see the README)."""
    s, t, k, b = report["spread"], report["sigterm"], report["sigkill"], report["daemon_bye"]
    w = s["wire"]
    hosts = [h for h in w if h.startswith("vb-host")]
    front = ADDRESS[FRONT]
    return {
        "spread_over_both": all(n > 0 for n in s["calls_per_daemon"].values()),
        "rtp_direct_caller_daemon": w[FRONT]["rtp_packets"] == 0
        and all(w[h]["rtp_calls_both_ways"] > 0 for h in hosts)
        and set(w[CALLER]["rtp_peers"]) == {ADDRESS[h] for h in hosts},
        "sdp_and_contact_own_address": all(
            set(w[h]["sdp_c_in_200"]) == {f"c=IN IP4 {ADDRESS[h]}"}
            and all(f"@{ADDRESS[h]}:" in c for c in w[h]["contact_in_200"])
            for h in hosts
        ),
        "record_route_is_the_front": w[FRONT]["record_route_is_the_front"],
        "caller_byes_via_front": all(
            w[h]["byes_from_elsewhere"] == 0 and w[h]["byes_from_front"] > 0 for h in hosts
        ),
        "sigterm_front_took_it_out": t["front_marked_host1_out_after_s"] is not None,
        "sigterm_drained_exit_0": t["host1_exit_code"] == 0 and not t["host1_drain_timeout_logged"],
        "sigterm_new_calls_answered": t["caller_side_around_sigterm"]["of_those_not_answered"] == 0,
        "sigkill_marked_down_within_bound": k["front_marked_it_down_after_s"] is not None
        and k["front_marked_it_down_after_s"] <= k["bound_s"],
        "sigkill_new_calls_answered": k["caller_side_around_kill"]["of_those_not_answered"] == 0,
        "sigkill_then_all_on_survivor": k["then_20_calls_on"][HOST2] == 0
        and k["then_20_calls_on"][HOST1] > 0,
        "daemon_byes_via_front": b["byes_sent_by_daemon_to"] == {front: b["calls"]}
        and b["byes_reaching_caller_from"] == {front: b["calls"]},
        "caller_heard_sip_only_from_front": w[CALLER]["sip_peers"] == [front],
    }


# -- the run -------------------------------------------------------------------------------------
def the_lan(args: argparse.Namespace) -> netns.Lan:
    return netns.lan(*ADDRESS.items(), delay_ms=args.delay_ms, rate=args.rate_cap)


def run(args: argparse.Namespace) -> dict[str, Any]:
    net = the_lan(args)
    report: dict[str, Any] = {
        "bench": "kamailio_hosts",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "hosts": ADDRESS,
    }
    with tempfile.TemporaryDirectory(prefix="vb-hosts-") as tmp_s, contextlib.ExitStack() as stack:
        tmp = Path(tmp_s)
        if args.keep:  # registered first: runs last, once every process has stopped
            import shutil

            keep = args.keep
            stack.callback(
                lambda: shutil.copytree(tmp, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("ctl"))
            )
        report["links"] = stack.enter_context(netns.built(net))
        one = stack.enter_context(host_daemon(tmp, HOST1, args.calls))
        two = stack.enter_context(host_daemon(tmp, HOST2, args.calls))
        ds = tmp / "dispatcher.list"
        ds.write_text(hosts_dispatcher_list(DISPATCHER_LIST.read_text(), [one.uri, two.uri]))
        with netns.entered(FRONT):
            front = stack.enter_context(run_front(
                tmp / "k", [], dispatcher_file=ds, listen_ip=ADDRESS[FRONT] if args.listen_ip else None,
                address=ADDRESS[FRONT], port=SIP_FRONT, probe_interval_s=args.probe_interval,
                fr_timer_ms=args.fr_timer_ms, pike_density=200, children=args.children,
                config=args.kamailio_cfg))  # fmt: skip
        report["kamailio_cfg"] = str(args.kamailio_cfg)
        report["kamailio_args"] = front.args
        if wait_for(lambda: all(flags(front, d).startswith("A") for d in (one, two)), 15) is None:
            raise RuntimeError(f"the front did not see both daemons up: {front.rpc('dispatcher.list')}")
        report["spread"] = phase_spread(args, tmp, front, [one, two])
        report["sigterm"] = phase_sigterm(args, tmp, front, [one, two])
        # host1 back, a new process; its drain timeout is short for the last phase
        first_one = one
        one = stack.enter_context(host_daemon(tmp, HOST1, args.calls, drain_s=DAEMON_BYE_DRAIN_S))
        wait_for(lambda: flags(front, one).startswith("A"), args.probe_interval * 2 + 5)
        report["sigkill"] = phase_sigkill(args, tmp, front, [one, two])
        report["daemon_bye"] = phase_daemon_bye(tmp, front, one)
        logs = front.logs()
        (tmp / "kamailio.log").write_text(logs)
        # the front's own warnings: a daemon taken out by an unanswered INVITE or probe, and
        # new calls refused (503) because no daemon was left in the set
        report["front_warnings"] = {
            "daemon_marked_down_on_invite_timeout": logs.count("did not answer: marked down"),
            "no_daemon_available_503": logs.count("no voice-bridge daemon available"),
        }
        # "rtp-timeout": the caller sent no RTP for 30 s (a stalled SIPp on a busy box)
        report["daemon_call_ends"] = [{"host": d.host, "ends": call_ends(d)} for d in (first_one, two, one)]
    report["load_after"] = os.getloadavg()
    report["checks"] = checks(report)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=40, help="calls per phase")
    ap.add_argument(
        "--rate", type=float, default=10.0, help="new calls per second (halved in sigterm/sigkill)"
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each call (RTP played)")
    ap.add_argument("--probe-interval", type=int, default=5, help="the front's PROBE_INTERVAL (shipped: 5)")
    ap.add_argument("--fr-timer-ms", type=int, default=2000, help="the front's FR_TIMER (shipped: 2000)")
    ap.add_argument(
        "--delay-ms", type=float, default=2.0, help="netem delay on each host's link, if available"
    )
    ap.add_argument("--rate-cap", default="100mbit", help="tbf rate on each host's link ('' for none)")
    ap.add_argument(
        "--listen-ip",
        action="store_true",
        help="give the front LISTEN_IP=10.77.0.1; default: unset, as Debian's kamailio.service "
        "runs the file (every address of every interface)",
    )
    ap.add_argument(
        "--children",
        type=int,
        default=4,
        help="the front's CHILDREN (shipped: 4; 1 keeps the daemon's 180 and 200 in order, "
        "which SIPp's scenario needs)",
    )
    ap.add_argument(
        "--kamailio-cfg",
        type=Path,
        default=CONFIG,
        help="another kamailio.cfg to compare, e.g. main's: git show main:deploy/kamailio/kamailio.cfg",
    )
    ap.add_argument("--keep", type=Path, help="copy captures, SIPp files and logs here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(
            "kamailio_hosts.py needs root (it creates network namespaces): run it with sudo", file=sys.stderr
        )
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a SIGTERM still runs the clean-up
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
