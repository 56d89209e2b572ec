"""The daemons-on-other-hosts configuration, without a network: what bench/kamailio_hosts.py
(network namespaces, root) substitutes into the shipped files, and that the shipped front
assumes no local address."""

from __future__ import annotations

import re

import pytest

from bridge.settings.loader import load_settings
from devkit import netns
from devkit.hosts import (
    DAEMON_SIP_PORT,
    daemon_args,
    daemon_env,
    destination_lines,
    hosts_dispatcher_list,
)
from devkit.kamailio import CONFIG, DISPATCHER_LIST


def test_the_hosts_list_keeps_the_shipped_format_with_one_line_per_host() -> None:
    shipped = DISPATCHER_LIST.read_text()
    text = hosts_dispatcher_list(shipped, ["10.77.0.11:5071", "10.77.0.12:5071"])
    lines = destination_lines(text)
    first = destination_lines(shipped)[0]
    assert [line[1] for line in lines] == ["sip:10.77.0.11:5071", "sip:10.77.0.12:5071"]
    for line in lines:
        # same set, flags (probe from start-up), priority and maxload as the shipped line
        assert (line[0], line[2], line[3]) == (first[0], first[2], first[3])
        assert "maxload=200" in line[4]
    duids = [re.search(r"duid=([^;]+)", line[4]).group(1) for line in lines]  # type: ignore[union-attr]
    assert len(set(duids)) == 2  # the same port on two hosts: two daemons, two load counters
    assert all(c in text for c in (line for line in shipped.splitlines() if line.startswith("#")))


def test_a_destination_without_a_port_is_refused() -> None:
    with pytest.raises(ValueError, match="host:port"):
        hosts_dispatcher_list(DISPATCHER_LIST.read_text(), ["10.77.0.11"])


def test_a_daemon_on_another_host_listens_on_advertises_and_trusts_the_right_addresses() -> None:
    env = daemon_env("10.77.0.11", "10.77.0.1", calls=40)
    args = daemon_args("10.77.0.11", calls=40)
    settings = load_settings(path=None, environ=env)  # through the daemon's own schema
    assert settings.sip.public_address == "10.77.0.11"  # SDP c= and Contact: not 127.0.0.1
    assert settings.sip.trust.trusted_cidrs == ["10.77.0.1/32"]  # the front's INVITEs
    assert settings.sip.max_calls == 50
    assert args[args.index("--sip-listen") + 1] == f"10.77.0.11:{DAEMON_SIP_PORT}"
    assert args[args.index("--http-listen") + 1].startswith("10.77.0.11:")
    lo, hi = map(int, args[args.index("--rtp-ports") + 1].split("-"))
    assert hi - lo + 1 >= 2 * 40  # an RTP and an RTCP port per call


def test_the_shipped_front_names_no_local_address() -> None:
    # Debian's kamailio.service runs the file without -A: its defaults must work on any host.
    # 0.0.0.0 would end up in Record-Route and Via (found by bench/kamailio_hosts.py).
    code = [line.split("#", 1)[0] for line in CONFIG.read_text().splitlines() if not line.startswith("#")]
    code_text = "\n".join(code)
    assert "0.0.0.0" not in code_text and "127.0.0.1" not in code_text and "localhost" not in code_text
    listens = [line for line in code if line.startswith("listen=")]
    assert listens and all("LISTEN_IP" in line for line in listens)
    text = CONFIG.read_text()
    assert text.index("#!ifdef LISTEN_IP") < text.index(listens[0]) < text.index("port=SIP_PORT")
    assert re.search(r"^mhomed=1$", text, re.M)  # probes leave from the address routing to the daemon


def test_the_emulated_lan_only_touches_its_own_namespaces() -> None:
    net = netns.lan(("vb-front", "10.77.0.1"), ("vb-host1", "10.77.0.11"), delay_ms=2, rate="100mbit")
    for cmd in netns.setup_commands(net) + netns.shaping_commands(net, net.hosts[0], with_netem=True):
        assert cmd[0] == "ip"
        if cmd[1:3] == ["netns", "add"]:
            assert cmd[3] in net.namespaces
        elif cmd[1] == "-n":
            assert cmd[2] in net.namespaces
            if "peer" in cmd:  # the host's end of its cable goes straight into the host
                assert cmd[cmd.index("netns") + 1] in net.namespaces
        else:
            assert cmd[1:3] == ["netns", "exec"] and cmd[3] in net.namespaces
    with pytest.raises(ValueError):
        netns.lan(("front", "10.77.0.1"))  # not one of ours by name: never created or deleted
    with pytest.raises(ValueError):
        netns.lan(("vb-a", "10.77.0.1"), ("vb-b", "10.77.0.1"))
