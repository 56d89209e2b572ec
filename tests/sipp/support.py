"""Helpers for the wire tests against the real daemon: /healthz and /metrics readers, a raw
UDP SIP client (for byte-exact retransmissions and torture messages), SIPp in the background."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from aiosipua import SipResponse
from aiosipua.message import SipMessage

from bridge.simulator.sipp import free_udp_port
from bridge.sip.wire import tag_of


def health(http: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"{http}/healthz", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as err:  # 503 while draining still carries the JSON body
        return dict(json.loads(err.read()))


def metrics_text(http: str) -> str:
    with urllib.request.urlopen(f"{http}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric(http: str, name: str, labels: str = "") -> float:
    text = metrics_text(http)
    key = re.escape(name) + (rf"\{{{re.escape(labels)}\}}" if labels else "")
    pattern = rf"^{key} (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_for(cond: Callable[[], bool], limit_s: float = 10.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def idle(http: str) -> bool:
    h = health(http)
    return h["active_calls"] == 0 and h["rtp_ports_in_use"] == 0


class RawSip:
    """A bare UDP socket speaking SIP text to the daemon: what we send is exactly what goes out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.lport = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def recv(self, timeout: float = 3.0) -> SipMessage | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65535)
        except TimeoutError:
            return None
        return SipMessage.parse(data)

    def final(self, timeout: float = 5.0, branch: str | None = None) -> tuple[SipResponse, list[SipMessage]]:
        """Read until a final response arrives (to the request sent on `branch`, when given:
        the daemon may be retransmitting an older one); returns it and everything read."""
        seen: list[SipMessage] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(max(deadline - time.monotonic(), 0.01))
            if msg is None:
                break
            seen.append(msg)
            if branch is not None and f"branch={branch}" not in (msg.get_header("via") or ""):
                continue
            if isinstance(msg, SipResponse) and msg.status_code >= 200:
                return msg, seen
        raise AssertionError(f"no final response in {timeout} s; got {[_first_line(m) for m in seen]}")

    def drain(self, quiet_s: float = 0.3) -> list[SipMessage]:
        """Everything that arrives until the line is quiet for quiet_s."""
        out = []
        while (msg := self.recv(quiet_s)) is not None:
            out.append(msg)
        return out

    # -- a minimal UAC for one dialog ---------------------------------------------------
    def invite(self, call_id: str, sdp: str, branch: str = "z9hG4bK-inv1", from_tag: str = "ft1") -> bytes:
        return self._request("INVITE", call_id, 1, branch, from_tag, None, sdp)

    def ack(self, call_id: str, to_tag: str, from_tag: str = "ft1", branch: str = "z9hG4bK-ack1") -> bytes:
        return self._request("ACK", call_id, 1, branch, from_tag, to_tag, "")

    def bye(self, call_id: str, to_tag: str, cseq: int = 2, from_tag: str = "ft1",
            branch: str = "z9hG4bK-bye1") -> bytes:
        return self._request("BYE", call_id, cseq, branch, from_tag, to_tag, "")

    def answered_call(self, call_id: str, sdp: str) -> str:
        """INVITE, its 200, our ACK: a confirmed dialog; its To tag."""
        self.send(self.invite(call_id, sdp))
        ok, _ = self.final()
        assert ok.status_code == 200, first_line(ok)
        tag = to_tag(ok)
        self.send(self.ack(call_id, tag))
        return tag

    def _request(self, method: str, call_id: str, cseq: int, branch: str, from_tag: str,
                 to_tag: str | None, body: str) -> bytes:
        to = "<sip:agent@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} sip:agent@127.0.0.1:{self.port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.lport};branch={branch};rport",
            f"From: <sip:caller@127.0.0.1>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:caller@127.0.0.1:{self.lport}>",
            "Max-Forwards: 70",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def answer(self, request: SipMessage, code: int = 200, reason: str = "OK") -> None:
        """Answer a request the daemon sent us (e.g. its BYE), copying the dialog headers."""
        head = [f"SIP/2.0 {code} {reason}"]
        head += [f"Via: {v}" for v in request.get_header_values("via")]
        for name in ("From", "To", "Call-ID", "CSeq"):
            head.append(f"{name}: {request.get_header(name.lower())}")
        self.send(("\r\n".join([*head, "Content-Length: 0"]) + "\r\n\r\n").encode())


def to_tag(msg: SipMessage) -> str:
    tag = tag_of(msg.get_header("to"))
    assert tag, f"no To tag in {_first_line(msg)}"
    return tag


def _first_line(msg: SipMessage) -> str:
    return bytes(msg).split(b"\r\n", 1)[0].decode(errors="replace")


def first_line(msg: SipMessage) -> str:
    return _first_line(msg)


def sipp_background(scenario: Path, cwd: Path, *args: str, target: str | None = None,
                    calls: int = 1, timeout_s: int = 30) -> subprocess.Popen[str]:
    """SIPp in the background (as UAC with a target, or as UAS without), bounded in time."""
    cmd = ["sipp", *([target] if target else []), "-sf", str(scenario), "-m", str(calls), "-nostdin",
           "-i", "127.0.0.1", "-timeout", f"{timeout_s}s", "-timeout_error", *args]
    if "-p" not in args:
        cmd += ["-p", str(free_udp_port())]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
