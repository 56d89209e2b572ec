"""Follow <Dial><User>: place the SIP call to the bridge with SIPp, as Plivo's media server
would, carrying the sipHeaders as X-PH-* headers and playing the caller's audio over RTP.

SIPp cannot record the audio that comes back; the call's outcome (answered, BYE) is reported.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.devtools.sipp import free_udp_port, have_sipp, media_scenario, run_sipp


@dataclass(frozen=True, slots=True)
class SipCallResult:
    answered: bool
    returncode: int
    detail: str


_URI = re.compile(r"sips?:(?:(?P<user>[^@;>]+)@)?(?P<host>\[[^\]]+\]|[^:;>]+)(?::(?P<port>\d+))?")


def parse_sip_uri(uri: str) -> tuple[str, str, int]:
    m = _URI.match(uri.strip())
    if not m:
        raise ValueError(f"not a SIP URI: {uri!r}")
    return m.group("user") or "agent", m.group("host").strip("[]"), int(m.group("port") or 5060)


def render_scenario(workdir: Path, pcm: bytes, pause_ms: int, user: str, caller: str,
                    headers: dict[str, str]) -> Path:
    """uac_media.xml with the dialled user, the caller's number and the X-PH-* headers."""
    path = media_scenario(workdir, "PCMU", pcm, pause_ms)
    text = path.read_text()
    x_headers = "\n".join(f"      X-PH-{name}: {value}" for name, value in headers.items())
    text = text.replace("      X-PH-CallUUID: test[call_number]", x_headers or "      X-PH-Sim: 1")
    text = text.replace("sip:agent@", f"sip:{user}@")
    if caller:
        text = text.replace("+919876543210", re.sub(r"[^0-9+]", "", caller) or "anonymous")
    path.write_text(text)
    return path


def place_sip_call(uri: str, headers: dict[str, str], caller: str, pcm: bytes, pause_ms: int,
                   timeout_s: float = 60.0) -> SipCallResult:
    if not have_sipp():
        raise RuntimeError("SIPp is not installed (Debian package sip-tester)")
    user, host, port = parse_sip_uri(uri)
    with tempfile.TemporaryDirectory(prefix="plivo-sim-") as tmp:
        work = Path(tmp)
        scenario = render_scenario(work, pcm, pause_ms, user, caller, headers)
        result = run_sipp(scenario, f"{host}:{port}", cwd=work, timeout=timeout_s,
                          media_port=free_udp_port())
    detail = (result.errors or result.stderr).strip().splitlines()
    return SipCallResult(result.returncode == 0, result.returncode, detail[-1] if detail else "")
