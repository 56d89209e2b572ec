"""The SIP server in-process: bytes in, bytes out, a fake clock, no sockets, no SIPp.

`Uas.feed` hands a datagram to SipServer.receive as if it came from CALLER; what the server
sends is recorded by a transport that opens no socket; `Uas.advance` moves the fake clock and
runs the server's `handle_timer` at each of its deadlines, as the asyncio shell would.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiosipua import SipRequest, SipResponse

from bridge.callmodel import CallInfo
from bridge.settings import Secrets
from bridge.settings.sip import SipSettings
from bridge.sip.call import SipCall
from bridge.sip.server import SipServer
from bridge.sip.transport import Peer, SipTransport, TcpConnection
from bridge.sip.wire import parse_message
from tests.sip.corpus import SDP

CALLER = Peer("udp", ("127.0.0.1", 5070))
PORT = 5080  # the port our Contact and Via name; nothing is bound


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Sent:
    data: bytes
    peer: Peer
    addr: tuple[str, int] | None

    @property
    def message(self) -> SipRequest | SipResponse:
        return parse_message(self.data)

    @property
    def status(self) -> int | None:
        """The status code of a response, read from its first line (a 400 may echo a bad CSeq
        that parse_message would refuse)."""
        first = self.data.split(b"\r\n", 1)[0].split(b" ")
        return int(first[1]) if first[0] == b"SIP/2.0" else None


class RecordingTransport(SipTransport):
    """Records what the server sends; `connect` fails unless `connectable` holds the address."""

    def __init__(self) -> None:
        super().__init__(lambda data, peer: None)
        self.sent: list[Sent] = []
        self.connectable: dict[tuple[str, int], TcpConnection] = {}
        self.port = PORT

    async def start(self, host: str, port: int, transports: list[str]) -> None:
        self.port = PORT

    async def stop(self) -> None:
        return None

    async def connect(self, addr: tuple[str, int]) -> TcpConnection:
        if addr not in self.connectable:
            raise OSError(f"connection refused: {addr}")
        return self.connectable[addr]

    def send(self, data: bytes, peer: Peer, addr: tuple[str, int] | None = None) -> bool:
        self.sent.append(Sent(data, peer, addr))
        return True


@dataclass
class FakeApp:
    """The CallApp side: records what the SIP layer tells it; `hold_prepare` keeps media
    binding pending (a CANCEL can then arrive before the 200)."""

    events: list[tuple[str, str]] = field(default_factory=list)
    calls: list[SipCall] = field(default_factory=list)
    hold_prepare: asyncio.Event | None = None
    refuse: tuple[int, str] | None = None

    def admit(self, info: CallInfo) -> tuple[int, str] | None:
        return self.refuse

    def unavailable(self) -> str | None:
        return None

    async def prepare(self, call: SipCall) -> tuple[str, int]:
        self.calls.append(call)
        if self.hold_prepare is not None:
            await self.hold_prepare.wait()
        return "127.0.0.1", 41000

    def established(self, call: SipCall) -> None:
        self.events.append(("established", call.info.call_id))

    def media_changed(self, call: SipCall) -> None:
        self.events.append(("media_changed", call.media.direction if call.media else ""))

    def dtmf(self, call: SipCall, digit: str, duration_ms: int) -> None:
        self.events.append(("dtmf", digit))

    def ended(self, call: SipCall, reason: str) -> None:
        self.events.append(("ended", reason))


def request(method: str, *, n: int = 1, branch: str | None = None, cseq: int = 1, to_tag: str = "",
            call_id: str | None = None, body: str = "", extra: tuple[str, ...] = (),
            cseq_method: str | None = None, port: int = CALLER.addr[1]) -> bytes:
    """A request from CALLER (or 127.0.0.1:``port``); the same `n` means the same call
    (Call-ID, From tag)."""
    lines = [
        f"{method} sip:agent@127.0.0.1:{PORT} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch or f'z9hG4bK-{method}-{n}'};rport",
        "Max-Forwards: 70",
        f"From: <sip:+14155550100@127.0.0.1>;tag=caller{n}",
        f"To: <sip:agent@127.0.0.1>{';tag=' + to_tag if to_tag else ''}",
        f"Call-ID: {call_id or f'call-{n}@127.0.0.1'}",
        f"CSeq: {cseq} {cseq_method or method}",
        f"Contact: <sip:caller@127.0.0.1:{port}>",
        *extra,
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def invite(n: int = 1, *, sdp: bool = True, branch: str | None = None, port: int = CALLER.addr[1]) -> bytes:
    return request("INVITE", n=n, branch=branch, body=SDP if sdp else "", port=port)


class Uas:
    def __init__(self, **sip: object) -> None:
        settings = SipSettings.model_validate({"listen_host": "127.0.0.1", "listen_port": 0,
                                               "transports": ["udp"], **sip})
        self.clock = FakeClock()
        self.wire = RecordingTransport()
        self.app = FakeApp()
        self.server = SipServer(settings, self.app, Secrets(), clock=self.clock, transport=self.wire,
                                loop_timer=False)
        self.t1 = settings.t1_ms / 1000

    async def __aenter__(self) -> Uas:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """SipServer.stop as the daemon runs it: meanwhile the fake clock moves (a 2xx still
        unACKed ends at stop's bound) and the caller answers our BYEs; what else was sent
        stays in ``wire.sent``."""
        stopping = asyncio.create_task(self.server.stop())
        answered = len(self.wire.sent)
        for _ in range(1000):  # bounded; our BYE transactions resend on the real clock (T1)
            await settle()
            if stopping.done():
                break
            for sent in self.wire.sent[answered:]:
                if sent.data.startswith(b"BYE "):
                    message = sent.message
                    assert isinstance(message, SipRequest)
                    self.server.receive(response_to(message), CALLER)
            answered = len(self.wire.sent)
            await self.advance(0.1)
            await asyncio.sleep(0.01)
        await stopping

    async def feed(self, data: bytes, peer: Peer = CALLER) -> None:
        self.server.receive(data, peer)
        await settle()

    async def advance(self, seconds: float) -> None:
        """Move the fake clock, running the server's timers at each deadline on the way."""
        await settle()  # what was fed reacts at the current time first
        end = self.clock.now + seconds
        for _ in range(10_000):  # bounded: a deadline that never moves would be a bug
            deadline = self.server.next_deadline()
            if deadline is None or deadline > end:
                break
            self.clock.now = max(self.clock.now, deadline)
            self.server.handle_timer(self.clock.now)
            await settle()
        else:
            raise AssertionError("timers did not settle")
        self.clock.now = end
        await settle()

    def take(self) -> list[SipRequest | SipResponse]:
        """What was sent since the last take(), parsed."""
        out = [s.message for s in self.wire.sent]
        self.wire.sent.clear()
        return out

    def taken_codes(self) -> list[int]:
        codes = [s.status for s in self.wire.sent if s.status is not None]
        self.wire.sent.clear()
        return codes


async def settle() -> None:
    """Let spawned tasks (answering a call, sending a BYE) run up to their next wait."""
    for _ in range(20):
        await asyncio.sleep(0)


def to_tag_of(resp: SipRequest | SipResponse) -> str:
    value = resp.get_header("to") or ""
    return value.split(";tag=", 1)[1].split(";")[0] if ";tag=" in value else ""


def response_to(req: SipRequest, code: int = 200) -> bytes:
    """The caller's answer to a request of ours (our BYE, REFER)."""
    lines = [f"SIP/2.0 {code} OK"]
    lines += [f"Via: {v}" for v in req.get_header_values("via")]
    lines += [f"From: {req.get_header('from')}", f"To: {req.get_header('to')}",
              f"Call-ID: {req.call_id}", f"CSeq: {req.get_header('cseq')}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
