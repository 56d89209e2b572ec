"""Where a SIP message came from and how to answer it; no I/O, so the sans-I/O cores
(server_tx.py, ack_wait.py) can hold one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Connection(Protocol):
    """A stream connection (bridge/sip/transport.py's TcpConnection)."""

    @property
    def is_open(self) -> bool: ...

    def send(self, data: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from and how to answer: transport 'udp' or 'tcp'."""

    transport: str
    addr: tuple[str, int]
    conn: Connection | None = None
