"""How many sockets listen on one TCP address:port in this network namespace (the kernel's
SO_REUSEPORT group of the stream port), read from /proc/net/tcp and /proc/net/tcp6.

A daemon cannot ask the other daemons sharing its stream port whether they listen, but the
kernel can tell: every listener of the group is a LISTEN line on that address and port. The
stream server leaves the group while it is busy only if another listener stays in it
(``bridge/stream/busy_leave.py``).

The count is asked of the kernel's sock_diag netlink interface first (what ``ss`` uses): a
dump of the LISTEN sockets on the port only, from the kernel's listening hash. Reading
/proc/net/tcp instead makes the kernel print every socket of the namespace and us parse each
line: ~6 ms at 150 calls (a stream, provider connections and the fakes' ends of them), paid
on every busy check, 4 times a second while shedding. The /proc tables stay as the fallback
(no sock_diag: an old kernel, a sandbox) and as the reference the tests compare with."""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

_LISTEN = "0A"  # TCP_LISTEN in include/net/tcp_states.h
_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _address(hex_addr: str) -> str:
    """/proc/net/tcp's address: the in-kernel bytes printed as 32-bit words in host order."""
    raw = bytes.fromhex(hex_addr)
    words = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    return str(ipaddress.ip_address(b"".join(words)))


# sock_diag (linux/sock_diag.h, linux/inet_diag.h, linux/netlink.h)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10  # include/net/tcp_states.h (the "0A" of /proc/net/tcp)
_TCPF_LISTEN = 1 << _TCP_LISTEN
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states; inet_diag_sockid: sport, dport (network
# order), src[16], dst[16], if, cookie[2]
_RECV_TIMEOUT = 0.05  # seconds
_DIAG_MSG_MIN = 72  # inet_diag_msg: 4 bytes, the 48-byte sockid, 5 u32


def _request(family: int, port: int) -> bytes:
    body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, _TCPF_LISTEN)
    # the kernel filters the listening hash on sport (network order) when it is set
    body += struct.pack("!HH", port, 0) + bytes(32) + struct.pack("=I", 0) + bytes(8)
    flags = _NLM_F_REQUEST | _NLM_F_DUMP
    return _NLMSG.pack(_NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY, flags, 1, 0) + body


def _diag_listeners(family: int, port: int, want: str) -> int:
    """LISTEN sockets of ``family`` on ``want``:``port`` from one sock_diag dump; OSError when
    the kernel cannot answer (no sock_diag, or no inet6_diag for AF_INET6)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    try:
        # the kernel answers a dump synchronously (the reply is queued before sendto returns);
        # this recv runs on the event loop, so a sandbox that never answers costs 50 ms a
        # busy check (4 a second while shedding), then /proc counts
        sock.settimeout(_RECV_TIMEOUT)
        sock.sendto(_request(family, port), (0, 0))
        size = 4 if family == socket.AF_INET else 16
        found = 0
        while True:
            data = sock.recv(65536)
            if not data:
                raise OSError("sock_diag: empty answer")
            count, done = _parse_reply(data, port, want, size)
            found += count
            if done:
                return found
    finally:
        sock.close()


def _parse_reply(data: bytes, port: int, want: str, size: int) -> tuple[int, bool]:
    """One datagram of a sock_diag dump: the LISTEN sockets on ``want``:``port`` in it (``size``:
    the address length of the family asked), and whether it ended the dump (NLMSG_DONE).
    OSError for a malformed answer: a message longer than the datagram, a cut header, an
    NLMSG_ERROR without its error code."""
    found = 0
    pos = 0
    while pos < len(data):
        if pos + _NLMSG.size > len(data):
            raise OSError("sock_diag: truncated message header")
        length, kind, _, _, _ = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size or pos + length > len(data):
            raise OSError("sock_diag: bad message length")
        if kind == _NLMSG_DONE:
            return found, True
        if kind == _NLMSG_ERROR:
            if length < _NLMSG.size + 4:
                raise OSError("sock_diag: short error message")
            (errno,) = struct.unpack_from("=i", data, pos + _NLMSG.size)
            raise OSError(-errno, "sock_diag refused the dump")
        if kind == _SOCK_DIAG_BY_FAMILY and length >= _NLMSG.size + _DIAG_MSG_MIN:
            msg = pos + _NLMSG.size
            state = data[msg + 1]
            (sport,) = struct.unpack_from("!H", data, msg + 4)
            src = data[msg + 8 : msg + 8 + size]
            if state == _TCP_LISTEN and sport == port and str(ipaddress.ip_address(src)) == want:
                found += 1
        pos += (length + 3) & ~3
    return found, False


def count_listeners(host: str, port: int, tables: tuple[str, ...] = _TABLES) -> int | None:
    """LISTEN sockets on ``host:port`` (our own included); None when they cannot be counted
    (not Linux, no sock_diag and /proc not mounted): then nobody may assume another listener
    is there. sock_diag first, /proc's tables if it cannot answer for both families."""
    want = str(ipaddress.ip_address(host))
    if tables == _TABLES:  # the system's own tables: the kernel can answer instead
        try:
            return sum(_diag_listeners(family, port, want) for family in (socket.AF_INET, socket.AF_INET6))
        except (OSError, AttributeError):  # AttributeError: no AF_NETLINK (not Linux)
            pass
        except (IndexError, struct.error, ValueError):  # an answer _parse_reply did not expect
            pass
    return proc_listeners(want, port, tables)


def proc_listeners(want: str, port: int, tables: tuple[str, ...] = _TABLES) -> int | None:
    """``count_listeners`` read from /proc/net/tcp{,6} (``want``: the address as
    ``ipaddress`` prints it); None when no table can be read."""
    found = 0
    read_any = False
    for table in tables:
        try:
            with open(table, encoding="ascii") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split(None, 4)
            if len(fields) < 4 or fields[3] != _LISTEN:
                continue
            addr, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and _address(addr) == want:
                found += 1
    return found if read_any else None


def try_group_lock(port: int) -> socket.socket | None:
    """A mutex shared by the daemons of one network namespace for the stream port's group: an
    abstract-namespace Unix socket only one process can bind at a time (no file, released when
    closed or when the process dies). None when another daemon holds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"\0voice-bridge-stream-group-{port}")
    except OSError:
        sock.close()
        return None
    return sock


def listening_socket(host: str, port: int, backlog: int = 100) -> socket.socket:
    """A listening socket on ``host:port`` in the port's SO_REUSEPORT group, made synchronously:
    it is in the group (and queues connections) from ``listen()`` on, before the event loop
    serves it. SO_REUSEADDR as asyncio's create_server sets it; backlog as its default."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
