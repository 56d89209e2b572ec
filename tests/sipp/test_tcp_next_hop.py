"""Our in-dialog requests over TCP when the connection the call came on is gone (a proxy
restarted mid-call): the BYE goes out on a new connection to the next hop named by the
Record-Route; when that hop cannot be reached either, the BYE is logged and counted, not
silently lost. Against the real daemon; the "proxy" is a TCP socket of the test."""

from __future__ import annotations

import signal
import socket
import wave
from pathlib import Path

import pytest

from bridge.simulator.procs import free_port, run_daemon
from tests.sip.corpus import SDP
from tests.sipp.support import health, metric, wait_for

pytestmark = pytest.mark.sipp


def _invite(daemon_port: int, proxy_port: int, local: tuple[str, int], call_id: str) -> bytes:
    body = SDP.encode()
    return (f"INVITE sip:agent@127.0.0.1:{daemon_port};transport=tcp SIP/2.0\r\n"
            f"Record-Route: <sip:127.0.0.1:{proxy_port};transport=tcp;lr>\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{local[1]};branch=z9hG4bK-{call_id}\r\n"
            "From: <sip:caller@127.0.0.1>;tag=ft1\r\nTo: <sip:agent@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@127.0.0.1:{local[1]};transport=tcp>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class _Stream:
    """SIP messages off a TCP socket, framed by Content-Length (several may come in one read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def message(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            self._more()
            head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed; got {self.buf!r}"
        self.buf += chunk


def _header(msg: bytes, name: str) -> str:
    for line in msg.split(b"\r\n"):
        if line.lower().startswith(name.lower().encode() + b":"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


def _answered_call(daemon_port: int, proxy_port: int, call_id: str) -> None:
    """An INVITE over TCP through our 'proxy', answered and ACKed; then the connection closes."""
    with socket.create_connection(("127.0.0.1", daemon_port), timeout=10) as conn:
        conn.sendall(_invite(daemon_port, proxy_port, conn.getsockname(), call_id))
        stream = _Stream(conn)
        while True:
            resp = stream.message()
            if resp.startswith(b"SIP/2.0 200"):
                break
            assert resp.startswith(b"SIP/2.0 1"), resp[:200]
        assert _header(resp, "record-route") == f"<sip:127.0.0.1:{proxy_port};transport=tcp;lr>"
        ack = (f"ACK sip:agent@127.0.0.1:{daemon_port};transport=tcp SIP/2.0\r\n"
               f"Via: SIP/2.0/TCP 127.0.0.1:{conn.getsockname()[1]};branch=z9hG4bK-ack-{call_id}\r\n"
               f"From: <sip:caller@127.0.0.1>;tag=ft1\r\nTo: {_header(resp, 'to')}\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        conn.sendall(ack.encode())
    # Leaving the with-block closed the connection: the proxy "restarted".


def test_bye_opens_a_new_tcp_connection_to_the_record_route_hop(tmp_path: Path) -> None:
    proxy = socket.create_server(("127.0.0.1", 0))
    proxy.settimeout(20)
    proxy_port = proxy.getsockname()[1]
    env = {"VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "1"}
    with proxy, run_daemon(tmp_path, agent="echo", env=env) as daemon:
        _answered_call(daemon.sip_port, proxy_port, "tcp-reconnect-1")
        daemon.proc.send_signal(signal.SIGTERM)  # the drain timeout hangs the call up: our BYE
        conn, _ = proxy.accept()
        with conn:
            conn.settimeout(10)
            bye = _Stream(conn).message()
            assert bye.startswith(b"BYE sip:caller@127.0.0.1:"), bye[:200]
            assert _header(bye, "route") == f"<sip:127.0.0.1:{proxy_port};transport=tcp;lr>"
            assert _header(bye, "call-id") == "tcp-reconnect-1"
            head = [f"Via: {_header(bye, 'via')}", f"From: {_header(bye, 'from')}",
                    f"To: {_header(bye, 'to')}", "Call-ID: tcp-reconnect-1", f"CSeq: {_header(bye, 'cseq')}"]
            ok = "SIP/2.0 200 OK\r\n" + "\r\n".join(head) + "\r\nContent-Length: 0\r\n\r\n"
            conn.sendall(ok.encode())
            assert daemon.proc.wait(20) == 0
    assert "opened a SIP TCP connection" in daemon.logs()


def test_a_bye_that_cannot_be_sent_is_logged_and_counted(tmp_path: Path) -> None:
    dead_port = free_port(socket.SOCK_STREAM)  # nothing listens there
    prompt = tmp_path / "prompt.wav"
    with wave.open(str(prompt), "wb") as w:  # the prompt agent plays it, then hangs up: our BYE
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(8000))
    env = {"VOICE_BRIDGE_DAEMON__PROMPT_FILE": str(prompt), "VOICE_BRIDGE_DAEMON__PROMPT_LISTEN_S": "0.2"}
    with run_daemon(tmp_path, agent="prompt", env=env) as daemon:
        _answered_call(daemon.sip_port, dead_port, "tcp-unsendable-1")
        failures = 'method="BYE",transport="tcp"'
        assert wait_for(lambda: metric(daemon.http, "voice_bridge_sip_send_failures_total", failures) == 1,
                        10), daemon.logs()
        assert wait_for(lambda: health(daemon.http)["active_calls"] == 0, 5)
        assert "SIP BYE not sent: no way to the next hop" in daemon.logs()
        assert daemon.proc.poll() is None


def test_response_after_the_connection_closed_goes_to_the_via_on_a_new_connection(tmp_path: Path) -> None:
    """RFC 3261 §18.2.2: the caller's connection closes while we ring (answer_delay_ms); the
    200 goes over a new connection to the Via's sent-by (no rport: its port), where the
    caller listens, and the call goes on there (ACK, BYE)."""
    caller = socket.create_server(("127.0.0.1", 0))
    caller.settimeout(20)
    via_port = caller.getsockname()[1]
    env = {"VOICE_BRIDGE_SIP__ANSWER_DELAY_MS": "1500"}
    with caller, run_daemon(tmp_path, agent="echo", env=env) as daemon:
        with socket.create_connection(("127.0.0.1", daemon.sip_port), timeout=10) as conn:
            invite = _invite(daemon.sip_port, via_port, ("127.0.0.1", via_port), "tcp-via-1")
            conn.sendall(invite.replace(b"Record-Route: ", b"X-Not-Routed: "))
            assert _Stream(conn).message().startswith(b"SIP/2.0 100")
        # closed before the 200
        back, _ = caller.accept()
        with back:
            back.settimeout(10)
            stream = _Stream(back)
            resp = stream.message()
            while resp.startswith(b"SIP/2.0 18"):
                resp = stream.message()
            assert resp.startswith(b"SIP/2.0 200"), resp[:200]
            assert _header(resp, "call-id") == "tcp-via-1"
            to = _header(resp, "to")
            common = (f"Via: SIP/2.0/TCP 127.0.0.1:{via_port};branch=z9hG4bK-%s\r\n"
                      f"From: <sip:caller@127.0.0.1>;tag=ft1\r\nTo: {to}\r\nCall-ID: tcp-via-1\r\n"
                      "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            back.sendall((f"ACK sip:agent@127.0.0.1:{daemon.sip_port};transport=tcp SIP/2.0\r\n"
                          "CSeq: 1 ACK\r\n" + common % "ack-via-1").encode())
            back.sendall((f"BYE sip:agent@127.0.0.1:{daemon.sip_port};transport=tcp SIP/2.0\r\n"
                          "CSeq: 2 BYE\r\n" + common % "bye-via-1").encode())
            ok = stream.message()
            while not _header(ok, "cseq").endswith("BYE"):  # a resent 200 to the INVITE may come first
                ok = stream.message()
            assert ok.startswith(b"SIP/2.0 200"), ok[:200]
        assert wait_for(lambda: health(daemon.http)["active_calls"] == 0, 5), daemon.logs()
        assert metric(daemon.http, "voice_bridge_calls_total", 'outcome="bye",transport="sip"') == 1
