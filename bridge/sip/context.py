"""What the SIP layer's parts share: settings, the application, the tables, and the few
effects they may ask of the asyncio shell (send, spawn a task, re-arm its one timer)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.settings.sip import SipSettings
from bridge.sip.ack_wait import AckWaits, DialogKey
from bridge.sip.app import CallApp
from bridge.sip.responses import Responder, Send
from bridge.sip.server_tx import Outgoing, ServerTransactions
from bridge.sip.transactions import TransactionLayer
from bridge.sip.transport import Peer, TcpConnection
from bridge.sip.trust import TrustPolicy

if TYPE_CHECKING:
    from bridge.sip.call import SipCall


class Addresses:
    """The address to advertise to each peer: public_address, the bound address, or the
    interface the kernel would route to the peer from."""

    def __init__(self, settings: SipSettings) -> None:
        self._s = settings
        self._local_ips: dict[str, str] = {}
        self.bound_port = 0

    def local_ip_for(self, remote_ip: str) -> str:
        if self._s.public_address:
            return self._s.public_address
        if self._s.listen_host not in ("", "0.0.0.0"):
            return self._s.listen_host
        ip = self._local_ips.get(remote_ip)
        if ip is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.connect((remote_ip, 9))  # no packet is sent: this only picks the route
                    ip = s.getsockname()[0]
                except OSError:
                    ip = "127.0.0.1"
            self._local_ips[remote_ip] = ip
        return ip

    def contact_for(self, peer: Peer) -> str:
        host = self.local_ip_for(peer.addr[0])
        return f"<sip:{self._s.user}@{host}:{self.bound_port};transport={peer.transport}>"


@dataclass(eq=False)
class SipContext:
    settings: SipSettings
    app: CallApp
    trust: TrustPolicy
    addresses: Addresses
    txs: ServerTransactions
    acks: AckWaits
    client: TransactionLayer  # our requests (BYE, REFER, REGISTER, outbound INVITE)
    responder: Responder
    clock: Callable[[], float]
    send: Send
    spawn: Callable[[Coroutine[Any, Any, Any], str], None]
    rearm: Callable[[], None]  # a deadline may have moved: the shell re-arms its timer
    connect: Callable[[tuple[str, int]], Awaitable[TcpConnection]]
    calls: dict[DialogKey, SipCall] = field(default_factory=dict)
    # Outbound calls: the last ACK per Call-ID, resent when the far end repeats its final.
    uac_acks: dict[str, Outgoing] = field(default_factory=dict)
    draining: bool = False
