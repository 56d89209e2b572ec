"""HOST:PORT values (command-line flags and settings such as daemon.stream_listen)."""

from __future__ import annotations


def parse_host_port(value: str, default_host: str) -> tuple[str, int]:
    """"127.0.0.1:5060" -> ("127.0.0.1", 5060); ":5060" -> (default_host, 5060); "[::1]:5060"
    -> ("::1", 5060). Raises ValueError naming what was expected."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or default_host, int(port)
