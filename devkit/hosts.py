"""What changes when the daemons run on other hosts than the Kamailio front, as the README's
scale-out section says, and nothing else: the dispatcher list names each daemon by its
host's address (the shipped list's format kept: set, flags, priority, duid, maxload), and
each daemon listens on and advertises its own address (SDP c=, Contact) and trusts the
front's address. Pure functions: bench/kamailio_hosts.py uses them on emulated hosts,
tests/kamailio/test_hosts_config.py checks them without a network."""

from __future__ import annotations

import json
from collections.abc import Sequence

DAEMON_SIP_PORT = 5071  # deploy/instances/1.env.example: the same on every host
DAEMON_HTTP_PORT = 8081
RTP_BASE = 20000


def destination_lines(text: str) -> list[list[str]]:
    """The destination lines of a dispatcher list, split into fields (comments skipped)."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def hosts_dispatcher_list(shipped: str, destinations: Sequence[str]) -> str:
    """``shipped`` (deploy/kamailio/dispatcher.list) with its destination lines replaced by one
    line per "host:port" in ``destinations``, in the format of its first line; comments kept."""
    lines = destination_lines(shipped)
    if not lines:
        raise ValueError("the shipped dispatcher list has no destination line to follow")
    setid, _uri, flags, priority, attrs = lines[0][:5]
    kept = [line for line in shipped.splitlines() if not line.strip() or line.lstrip().startswith("#")]
    out = []
    for dest in destinations:
        host, _, port = dest.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"not host:port: {dest!r}")
        fields = [
            f"duid={host.replace('.', '-')}-{port}" if a.startswith("duid=") else a for a in attrs.split(";")
        ]
        out.append(f"{setid} sip:{dest} {flags} {priority} {';'.join(fields)}")
    return "\n".join(kept + out) + "\n"


def daemon_env(address: str, front_address: str, calls: int) -> dict[str, str]:
    """The settings a daemon on another host needs: its own address advertised, the front's
    address trusted (its INVITEs are not challenged), room for ``calls``."""
    return {
        "VOICE_BRIDGE_SIP__PUBLIC_ADDRESS": address,
        "VOICE_BRIDGE_SIP__TRUST__TRUSTED_CIDRS": json.dumps([f"{front_address}/32"]),
        "VOICE_BRIDGE_SIP__MAX_CALLS": str(calls + 10),
    }


def daemon_args(address: str, calls: int) -> list[str]:
    """`voice-bridge run` flags: SIP, RTP and HTTP on the host's own address (not 127.0.0.1)."""
    rtp_hi = RTP_BASE + 2 * calls + 40 - 1
    return [
        "--sip-listen",
        f"{address}:{DAEMON_SIP_PORT}",
        "--rtp-ports",
        f"{RTP_BASE}-{rtp_hi}",
        "--http-listen",
        f"{address}:{DAEMON_HTTP_PORT}",
    ]
