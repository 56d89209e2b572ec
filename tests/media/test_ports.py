"""The RTP port allocator: even pairs, bound sockets, exhaustion, reuse, busy ports skipped."""

from __future__ import annotations

import socket

import pytest

from bridge.media.ports import PortAllocator, PortsExhausted
from tests.media.support import free_even_range


def test_hands_out_even_pairs_already_bound() -> None:
    lo, hi = free_even_range(3)
    ports = PortAllocator(lo, hi)
    assert ports.capacity == 3
    pair = ports.allocate("127.0.0.1")
    try:
        assert pair.port % 2 == 0 and lo <= pair.port and pair.port + 1 <= hi
        assert pair.rtp.getsockname()[1] == pair.port
        assert pair.rtcp.getsockname()[1] == pair.port + 1
        assert ports.in_use == 1
    finally:
        pair.rtp.close()
        pair.rtcp.close()
        ports.release(pair.port)
    assert ports.in_use == 0


def test_exhaustion_then_reuse_after_release() -> None:
    lo, hi = free_even_range(2)
    ports = PortAllocator(lo, hi)
    a = ports.allocate("127.0.0.1")
    b = ports.allocate("127.0.0.1")
    assert {a.port, b.port} == {lo, lo + 2}
    with pytest.raises(PortsExhausted):
        ports.allocate("127.0.0.1")
    for s in (a.rtp, a.rtcp):
        s.close()
    ports.release(a.port)
    ports.release(a.port)  # idempotent
    c = ports.allocate("127.0.0.1")
    assert c.port == a.port
    for s in (b.rtp, b.rtcp, c.rtp, c.rtcp):
        s.close()


def test_a_just_released_port_is_not_reused_while_others_are_free() -> None:
    lo, hi = free_even_range(3)
    for _ in range(20):  # random picks: try it many times
        ports = PortAllocator(lo, hi)
        first = ports.allocate("127.0.0.1")
        first.rtp.close()
        first.rtcp.close()
        ports.release(first.port)
        second = ports.allocate("127.0.0.1")
        assert second.port != first.port
        second.rtp.close()
        second.rtcp.close()


def test_ports_are_not_handed_out_in_a_predictable_order() -> None:
    """Sequential ports let a third party spray the next call's port before the caller's first
    packet (issue 10). 20 allocations from 40 pairs come out in ascending order with chance
    1/20!, and 20 fresh allocators all starting on the same port with chance 40**-19."""
    lo, hi = free_even_range(40)
    ports = PortAllocator(lo, hi)
    pairs = [ports.allocate("127.0.0.1") for _ in range(20)]
    order = [p.port for p in pairs]
    assert order != sorted(order) and len(set(order)) == 20
    for p in pairs:
        p.rtp.close()
        p.rtcp.close()
        ports.release(p.port)
    firsts = set()
    for _ in range(20):
        pair = PortAllocator(lo, hi).allocate("127.0.0.1")
        firsts.add(pair.port)
        pair.rtp.close()
        pair.rtcp.close()
    assert len(firsts) > 1


def test_a_port_held_by_someone_else_is_skipped() -> None:
    lo, hi = free_even_range(2)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", lo + 1))  # only the RTCP half of the first pair
    try:
        ports = PortAllocator(lo, hi)
        pair = ports.allocate("127.0.0.1")
        assert pair.port == lo + 2
        with pytest.raises(PortsExhausted):
            ports.allocate("127.0.0.1")
        pair.rtp.close()
        pair.rtcp.close()
    finally:
        squatter.close()


def test_odd_bounds_and_empty_ranges() -> None:
    assert PortAllocator(10001, 10004).capacity == 1  # only 10002/10003 fits
    with pytest.raises(ValueError):
        PortAllocator(10001, 10002)
