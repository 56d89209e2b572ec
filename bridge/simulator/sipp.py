"""Render SIPp caller scenarios (with an RTP pcap to play) and run SIPp, bounded in time."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bridge.audio.g711 import encoder
from bridge.simulator.pcap import write_rtp_pcap

SCENARIOS = Path(__file__).parent / "scenarios"
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}


def caller_pcap(pcap: Path, codec: str, pcm: bytes) -> Path:
    """`pcm` (8 kHz s16le) as 20 ms RTP packets of `codec` in a pcap SIPp can play."""
    encode = encoder(codec)
    payloads = [encode(pcm[i : i + 320]) for i in range(0, len(pcm) - 319, 320)]
    write_rtp_pcap(pcap, payloads, PAYLOAD_TYPES[codec])
    return pcap


def media_scenario(
    workdir: Path,
    codec: str,
    pcm: bytes,
    pause_ms: int,
    per_call_ports: bool = False,
    routed: bool = False,
) -> Path:
    """A UAC scenario offering `codec` (+ telephone-event) that plays `pcm` (8 kHz s16le) as
    20 ms RTP packets, waits pause_ms from the start of playback, then sends BYE.

    per_call_ports: each call gets its own media port ([auto_media_port], for load runs);
    otherwise every call uses SIPp's -mp port (one call at a time, easy to capture).
    routed: through a record-routing proxy (Kamailio): ACK and BYE go to the daemon's Contact
    with the 200's Record-Route as Route headers, and late provisional answers are accepted."""
    pcap = caller_pcap(workdir / f"caller_{codec}.pcap", codec, pcm)
    text = (
        (SCENARIOS / "uac_media.xml")
        .read_text()
        .format(
            codec=codec,
            pt=PAYLOAD_TYPES[codec],
            pcap=pcap,
            pause_ms=pause_ms,
            media_port_keyword="auto_media_port" if per_call_ports else "media_port",
        )
    )
    if routed:
        text = _routed(text)
    scenario = workdir / f"uac_media_{codec}{'_routed' if routed else ''}.xml"
    scenario.write_text(text)
    return scenario


def _routed(text: str) -> str:
    for code in ("100", "180", "183"):
        text = text.replace(f'response="{code}" optional="true"', f'response="{code}" optional="global"')
    text = text.replace('<recv response="200" rtd="true"/>', '<recv response="200" rtd="true" rrs="true"/>')
    via = "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
    for method in ("ACK", "BYE"):
        text = text.replace(
            f"{method} sip:agent@[remote_ip]:[remote_port] SIP/2.0\n{via}",
            f"{method} [next_url] SIP/2.0\n{via}      [routes]\n",
        )
    return text


def conversation_scenario(workdir: Path, codec: str, pcm: bytes, wait_ms: int) -> Path:
    """A UAC scenario that plays `pcm` as the caller's side of a conversation, then waits up to
    wait_ms for the agent's BYE (hanging up itself if none comes)."""
    pcap = caller_pcap(workdir / f"caller_talk_{codec}.pcap", codec, pcm)
    text = (SCENARIOS / "uac_converse.xml").read_text()
    text = text.format(codec=codec, pt=PAYLOAD_TYPES[codec], pcap=pcap, wait_ms=wait_ms)
    scenario = workdir / f"uac_converse_{codec}.xml"
    scenario.write_text(text)
    return scenario


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    errors: str


def have_sipp() -> bool:
    return shutil.which("sipp") is not None


def run_sipp(
    scenario: Path,
    target: str,
    *args: str,
    cwd: Path,
    calls: int = 1,
    timeout: float = 60.0,
    media_port: int | None = None,
    local_port: int | None = None,
    local_ip: str = "127.0.0.1",
) -> SippResult:
    """Run SIPp as a UAC against target (host:port), non-interactive and bounded in time.

    local_ip: the address SIPp sends from (signalling and media); another loopback address
    (127.0.0.2) makes it a source the daemon does not trust."""
    cmd = [
        "sipp",
        target,
        "-sf",
        str(scenario),
        "-m",
        str(calls),
        "-nostdin",
        "-i",
        local_ip,
        "-p",
        str(local_port or free_udp_port(local_ip)),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(cwd / "sipp_errors.log"),
        *args,
    ]
    if media_port is not None:
        cmd += ["-mi", local_ip, "-mp", str(media_port)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout + 15)
    err_file = cwd / "sipp_errors.log"
    errors = err_file.read_text(errors="replace") if err_file.exists() else ""
    return SippResult(proc.returncode, proc.stdout, proc.stderr, errors)
