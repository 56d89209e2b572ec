"""The SIP UDP socket is read in batches: asyncio alone takes one datagram per loop pass, which
at 500 calls left INVITEs/ACKs/BYEs waiting until they were retransmitted or dropped. On both
loops the daemon can run (uvloop reads 32 a pass itself, handing each up at once: what the
transport reads ahead must still be handled in arrival order)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bridge import event_loop
from bridge.sip.transport import UDP_DRAIN_PER_PASS, UDP_RCVBUF_BYTES, Peer, SipTransport


async def _burst(count: int) -> tuple[list[tuple[bytes, Peer]], int, SipTransport]:
    got: list[tuple[bytes, Peer]] = []
    transport = SipTransport(lambda data, peer: got.append((data, peer)))
    await transport.start("127.0.0.1", 0, ["udp"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind(("127.0.0.1", 0))
        for i in range(count):
            caller.sendto(b"OPTIONS sip:x SIP/2.0\r\nX-N: %d\r\n\r\n" % i, ("127.0.0.1", transport.port))
        caller.sendto(b"\r\n\r\n", ("127.0.0.1", transport.port))  # keep-alive: never handed up
        passes = 0
        # one pass hands up at most 1 + UDP_DRAIN_PER_PASS; bounded, no timing involved
        while len(got) < count and passes < 10 * count:
            await asyncio.sleep(0)
            passes += 1
        for _ in range(20):  # let the keep-alive arrive too, if it were to be handed up
            await asyncio.sleep(0)
    return got, passes, transport


@pytest.mark.parametrize("loop", event_loop.LOOP_NAMES)
def test_a_burst_is_read_in_few_loop_passes_in_order(loop: str) -> None:
    count = 3 * UDP_DRAIN_PER_PASS

    async def run() -> None:
        got, passes, transport = await _burst(count)
        try:
            assert [int(d.split(b"X-N: ")[1].split(b"\r")[0]) for d, _ in got] == list(range(count))
            assert all(p.transport == "udp" and p.addr[0] == "127.0.0.1" for _, p in got)
            # asyncio's own reading would need `count` passes, libuv's count / 32
            assert passes < count // 4
        finally:
            await transport.stop()

    event_loop.run(run(), loop)


@pytest.mark.parametrize("loop", event_loop.LOOP_NAMES)
def test_receive_buffer_is_raised_up_to_the_kernel_cap(loop: str) -> None:
    cap = int(Path("/proc/sys/net/core/rmem_max").read_text())

    async def run() -> None:
        transport = SipTransport(lambda data, peer: None)
        await transport.start("127.0.0.1", 0, ["udp"])
        try:
            assert transport._udp is not None and transport._udp.transport is not None
            sock = transport._udp.transport.get_extra_info("socket")
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            # Linux doubles the request (bookkeeping) and caps it at rmem_max
            assert granted >= 2 * min(UDP_RCVBUF_BYTES, cap)
        finally:
            await transport.stop()

    event_loop.run(run(), loop)


@pytest.mark.parametrize("loop", event_loop.LOOP_NAMES)
def test_datagrams_arriving_while_a_batch_is_read_keep_their_order(loop: str) -> None:
    # libuv goes on reading the socket after the protocol's read-ahead: what it reads then
    # must not be handled before what was read ahead of it.
    count = UDP_DRAIN_PER_PASS + 40

    async def run() -> None:
        got: list[int] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.bind(("127.0.0.1", 0))

            def handler(data: bytes, peer: Peer) -> None:
                got.append(int(data.split(b"X-N: ")[1].split(b"\r")[0]))
                if got == [0]:  # the burst arrives while the first one is being handled
                    for i in range(1, count):
                        caller.sendto(b"OPTIONS sip:x SIP/2.0\r\nX-N: %d\r\n\r\n" % i,
                                      ("127.0.0.1", transport.port))

            transport = SipTransport(handler)
            await transport.start("127.0.0.1", 0, ["udp"])
            try:
                caller.sendto(b"OPTIONS sip:x SIP/2.0\r\nX-N: 0\r\n\r\n", ("127.0.0.1", transport.port))
                for _ in range(20 * count):  # bounded, no timing involved
                    if len(got) == count:
                        break
                    await asyncio.sleep(0)
                assert got == list(range(count))
            finally:
                await transport.stop()

    event_loop.run(run(), loop)
