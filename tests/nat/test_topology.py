"""The NAT topology itself (tests/harness/netns.py), without the proxy: what
the media and keep-alive tests rely on really happens on this kernel.

* a datagram from a home reaches the public side from the NAT's outside
  address (MASQUERADE), and the answer gets back in through the mapping;
* ``cut_mapping`` makes the answers vanish, ``restore`` brings them back;
  ``cut_media`` stops only the phone's RTP ports; ``kill_home`` cuts the
  home off and kills what runs there, ``revive_home`` reconnects it;
* the RTP counters count what the NAT forwarded, per direction;
* leaving the ``with`` removes every namespace and link, and a stale
  topology of a dead process is swept away by the next one.
"""
from __future__ import annotations

import socket
import subprocess

import pytest

from tests.harness import netns
from tests.harness.poll import eventually

RTP = netns.RTP_PORTS[0]
QUIET_S = 0.3          # negative checks: "nothing arrives within this long"


@pytest.fixture
def topology():
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with netns.NatTopology(homes=2) as net:
        yield net
    assert not net.leftovers()


def udp(address: tuple[str, int] = ("0.0.0.0", 0), ns: str | None = None) -> socket.socket:
    sock = netns.socket_in(ns) if ns else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def nothing_arrives(sock: socket.socket) -> bool:
    sock.settimeout(QUIET_S)          # a negative check: nothing within QUIET_S
    try:
        sock.recvfrom(2048)
        return False
    except TimeoutError:
        return True
    finally:
        sock.settimeout(2)


def test_homes_reach_the_public_side_through_their_nat_and_answers_come_back(topology):
    server = udp((topology.public_ip, 0))
    for home in topology.homes:
        phone = udp((home.ip, RTP), home.ns)
        phone.sendto(b"hello", server.getsockname())
        data, source = server.recvfrom(2048)
        assert data == b"hello" and source[0] == home.nat_ip, f"not masqueraded: seen from {source}"
        server.sendto(b"answer", source)
        assert phone.recvfrom(2048) == (b"answer", server.getsockname())
        assert home.rtp_counts() == (1, 1)
        phone.close()
    # the homes are private: one home cannot reach the other's address
    a, b = topology.homes
    probe = udp((a.ip, 0), a.ns)
    listener = udp((b.ip, RTP), b.ns)
    probe.sendto(b"direct", (b.ip, RTP))
    assert nothing_arrives(listener)


def test_cut_mapping_cut_media_and_restore(topology):
    home = topology.homes[0]
    server = udp((topology.public_ip, 0))
    phone = udp((home.ip, RTP), home.ns)
    signalling = udp((home.ip, netns.SIP_PORT), home.ns)
    phone.sendto(b"open", server.getsockname())
    _, mapping = server.recvfrom(2048)

    topology.cut_mapping(home)
    server.sendto(b"in", mapping)
    assert nothing_arrives(phone), "the NAT still lets the outside in"
    topology.restore(home)
    server.sendto(b"in", mapping)
    assert phone.recvfrom(2048)[0] == b"in"

    topology.cut_media(home)
    phone.sendto(b"rtp", server.getsockname())
    assert nothing_arrives(server), "RTP left the home during cut_media"
    signalling.sendto(b"sip", server.getsockname())
    assert server.recvfrom(2048)[0] == b"sip", "cut_media must leave signalling alone"
    topology.restore(home)
    phone.sendto(b"rtp", server.getsockname())
    assert server.recvfrom(2048)[0] == b"rtp"


def test_kill_home_kills_its_processes_and_cuts_it_off(topology):
    home = topology.homes[1]
    sleeper = home.spawn(["sleep", "60"], stdin=subprocess.DEVNULL)
    server = udp((topology.public_ip, 0))
    phone = udp((home.ip, RTP), home.ns)
    topology.kill_home(home)
    assert sleeper.poll() == -9, "the home's process must die by SIGKILL"
    phone.sendto(b"lost", server.getsockname())
    assert nothing_arrives(server)
    topology.revive_home(home)
    # back up: a datagram gets through again (the link takes a moment to carry)
    eventually(lambda: (phone.sendto(b"back", server.getsockname()), not nothing_arrives(server))[1],
               "the revived home to reach the public side", 5, interval=0)


def test_everything_is_removed_and_stale_leftovers_are_swept():
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with netns.NatTopology(homes=1) as net:
        made = net.leftovers()
        assert len(made) >= 4, made          # two namespaces, bridge, bridge port (veths inside)
    assert net.leftovers() == []
    # what a killed run left: a namespace named after a PID that no longer exists
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.PREFIX}{netns._pid36(dead.pid)}zn1"
    netns.run(["ip", "netns", "add", stale])
    try:
        assert stale in netns.sweep_stale()
    finally:
        netns.run(["ip", "netns", "del", stale], check=False)
    assert stale not in netns.run(["ip", "netns", "list"]).stdout
