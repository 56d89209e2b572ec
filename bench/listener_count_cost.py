"""CPU per count of the stream port's listeners (the busy daemon's check, StreamServer.check_busy,
4 times a second while it sheds load): sock_diag (``count_listeners``) against the /proc/net/tcp
read it replaced (``proc_listeners``), with CONNECTIONS loopback TCP connections open in this
process (2 sockets each, as a daemon at 150 calls has its streams and provider connections and
the fakes have their ends), so /proc has as many lines to print and parse. Thread CPU time.

Usage: .venv/bin/python bench/listener_count_cost.py [--connections 600] [--tree DIR]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=600)
    ap.add_argument("--reads", type=int, default=50)
    ap.add_argument("--tree", type=Path, help="the checkout to measure (default: this one)")
    args = ap.parse_args()
    sys.path.insert(0, str((args.tree or Path(__file__).resolve().parent.parent).resolve()))
    from bridge.stream import listeners

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(args.connections + 10)
    port = server.getsockname()[1]
    socks = [server]
    for _ in range(args.connections):
        socks.append(socket.create_connection(("127.0.0.1", port)))
        socks.append(server.accept()[0])
    out: dict[str, object] = {"connections": args.connections, "tcp_lines": _lines(),
                              "load_average": os.getloadavg()}
    counters = {"count_listeners_us": lambda: listeners.count_listeners("127.0.0.1", port)}
    proc = getattr(listeners, "proc_listeners", None)  # the /proc reader (this tree's name)
    if proc is not None:
        counters["proc_listeners_us"] = lambda: proc("127.0.0.1", port)
    for name, count in counters.items():
        assert count() == 1, name
        cpu = time.thread_time()
        for _ in range(args.reads):
            count()
        out[name] = round((time.thread_time() - cpu) / args.reads * 1e6, 1)
    for s in socks:
        s.close()
    print(json.dumps(out))


def _lines() -> int:
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                total += sum(1 for _ in f) - 1
        except OSError:
            pass
    return total


if __name__ == "__main__":
    main()
