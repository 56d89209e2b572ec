"""Follow <Dial><User>: place the SIP call to the bridge with SIPp, as Plivo's media server
would, carrying the sipHeaders as X-PH-* headers and playing the caller's audio over RTP.

Plivo's servers are, to the bridge, just another address: unless told otherwise the call
comes from UNTRUSTED_SOURCE (another loopback address; Linux routes all of 127.0.0.0/8 to
lo), so a bridge that trusts only 127.0.0.1 challenges it, and SIPp answers the 401/407 once
with the <User>'s sipAuthUsername/sipAuthPassword, as Plivo does. Without those attributes
the challenge ends the call, as it would on Plivo.

SIPp cannot record the audio that comes back; the call's outcome (answered, refused with
which status, challenged or not) is reported.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.simulator.sipp import SCENARIOS, caller_pcap, free_udp_port, have_sipp, run_sipp

UNTRUSTED_SOURCE = "127.0.0.2"  # what a test daemon trusting 127.0.0.1 alone does not trust
TRUSTED_SOURCE = "127.0.0.1"

_SDP = """      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20"""


@dataclass(frozen=True, slots=True)
class SipCallResult:
    answered: bool
    returncode: int
    detail: str
    challenged: bool = False  # the bridge asked for digest credentials
    refused: int | None = None  # the final status that ended the call before it was answered


@dataclass(frozen=True, slots=True)
class SipAuth:
    """<User sipAuthUsername sipAuthPassword>: what Plivo answers a challenge with."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"SipAuth(username={self.username!r})"


_URI = re.compile(r"sips?:(?:(?P<user>[^@;>]+)@)?(?P<host>\[[^\]]+\]|[^:;>]+)(?::(?P<port>\d+))?")
# A quoted value in the [authentication] keyword of an injection-file field.
_INJECTABLE = re.compile(r'[^;"\]\r\n]+')


def parse_sip_uri(uri: str) -> tuple[str, str, int]:
    m = _URI.match(uri.strip())
    if not m:
        raise ValueError(f"not a SIP URI: {uri!r}")
    return m.group("user") or "agent", m.group("host").strip("[]"), int(m.group("port") or 5060)


def render_scenario(workdir: Path, pcm: bytes, pause_ms: int, user: str, caller: str,
                    headers: dict[str, str], auth: SipAuth | None = None) -> Path:
    """uac_plivo_dial.xml with the dialled user, the caller's number, the X-PH-* headers and
    the credentials (in an injection file, so they appear in no command line)."""
    if auth is not None and not all(_INJECTABLE.fullmatch(v) for v in (auth.username, auth.password)):
        raise ValueError("sipAuthUsername/sipAuthPassword is empty or holds ; \" ] or a line break: "
                         "SIPp cannot send it")
    pcap = caller_pcap(workdir / "caller_PCMU.pcap", "PCMU", pcm)
    x_headers = "\n".join(f"      X-PH-{name}: {value}" for name, value in headers.items())
    number = (re.sub(r"[^0-9+]", "", caller) or "anonymous") if caller else "+919876543210"
    # No credentials: a challenge ends the call (Plivo has nothing to answer it with).
    on_401, on_407 = ("challenged", "challenged") if auth is not None else ("r401", "r407")
    text = (SCENARIOS / "uac_plivo_dial.xml").read_text().format(
        user=user, caller=number, x_headers=x_headers or "      X-PH-Sim: 1", sdp=_SDP, pcap=pcap,
        pause_ms=pause_ms, on_challenge_401=on_401, on_challenge_407=on_407)
    path = workdir / "uac_plivo_dial.xml"
    path.write_text(text)
    # SIPp expands an [authentication] keyword injected whole (not one with [field] inside).
    keyword = f'[authentication username="{auth.username}" password="{auth.password}"]' if auth else "-"
    (workdir / "credentials.csv").write_text(f"SEQUENTIAL\n{keyword}\n")
    return path


def place_sip_call(uri: str, headers: dict[str, str], caller: str, pcm: bytes, pause_ms: int,
                   timeout_s: float = 60.0, auth: SipAuth | None = None,
                   source_ip: str = UNTRUSTED_SOURCE) -> SipCallResult:
    if not have_sipp():
        raise RuntimeError("SIPp is not installed (Debian package sip-tester)")
    user, host, port = parse_sip_uri(uri)
    with tempfile.TemporaryDirectory(prefix="plivo-sim-") as tmp:
        work = Path(tmp)
        scenario = render_scenario(work, pcm, pause_ms, user, caller, headers, auth)
        log = work / "call.log"
        result = run_sipp(scenario, f"{host}:{port}", "-inf", str(work / "credentials.csv"),
                          "-auth_uri", f"{user}@{host}:{port}",
                          "-trace_logs", "-log_file", str(log), cwd=work, timeout=timeout_s,
                          media_port=free_udp_port(source_ip), local_ip=source_ip)
        events = log.read_text(errors="replace") if log.exists() else ""
    refused = re.search(r"refused (\d{3})", events)
    answered = result.returncode == 0 and "answered" in events
    detail = (result.errors or result.stderr).strip().splitlines()
    text = f"refused with {refused.group(1)}" if refused else (detail[-1] if detail and not answered else "")
    return SipCallResult(answered, result.returncode, text, challenged="challenged" in events,
                         refused=int(refused.group(1)) if refused else None)
