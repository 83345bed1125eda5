"""A real proxy resolving next hops through a real DNS server (tests/harness/dns.py)."""
from __future__ import annotations

import contextlib

import pytest

from tests.harness.dns import DnsServer
from tests.harness.poll import eventually
from tests.harness.proxy import proxy_run
from tests.harness.sipp import free_udp_port
from tests.harness.udppeer import UdpPeer


@contextlib.contextmanager
def proxy_with_dns(tmp_path, broker, dns_port: int):
    sip_port = free_udp_port()
    config = tmp_path / "sipledger.toml"
    config.write_text(f"""[proxy]
domains = ["example.test"]
trusted_sources = ["127.0.0.0/8"]
[authorization]
enabled = false
[dns]
nameservers = ["127.0.0.1"]
port = {dns_port}
timeout_seconds = 20
negative_ttl_seconds = 0.5
""")
    with proxy_run(tmp_path / "data", config, sip_port, broker.bootstrap):
        yield sip_port


@pytest.fixture
def dns():
    with DnsServer() as server:
        yield server


@pytest.fixture
def peers():
    with UdpPeer() as caller, UdpPeer() as pbx:
        yield caller, pbx


def test_srv_picks_target_and_port_and_the_loop_never_waits_for_dns(tmp_path, broker, dns, peers):
    caller, pbx = peers
    dns.add("pbx.test", "NAPTR", '10 10 "s" "SIP+D2U" "" _sip._udp.pbx.test.')
    dns.add("_sip._udp.pbx.test", "SRV", f"10 0 {pbx.port} host.pbx.test.")
    dns.add("_sip._udp.pbx.test", "SRV", f"20 0 {free_udp_port()} other.pbx.test.")
    dns.add("host.pbx.test", "A", "127.0.0.1")
    dns.hold("host.pbx.test", "A")                     # a slow server for the last step
    with proxy_with_dns(tmp_path, broker, dns.port) as sip_port:
        call_id = caller.request("MESSAGE", "sip:bob@pbx.test", "sip:bob@pbx.test", sip_port)
        eventually(lambda: dns.seen("host.pbx.test", "A"), "the proxy to ask for the SRV target's address")
        assert dns.seen("pbx.test", "NAPTR") == 1 and dns.seen("_sip._udp.pbx.test", "SRV") == 1
        # while the DNS answer is held, the worker still answers
        ping = caller.request("OPTIONS", "sip:example.test", "sip:example.test", sip_port)
        eventually(lambda: 200 in caller.statuses(ping), "OPTIONS answered while DNS is slow")
        assert pbx.messages(call_id) == []
        dns.release()
        (message,) = eventually(lambda: pbx.messages(call_id), "the MESSAGE at the SRV target's port")
        assert message.startswith("MESSAGE sip:bob@pbx.test SIP/2.0")


def test_a_transient_dns_failure_is_retried_after_the_negative_ttl(tmp_path, broker, dns, peers):
    caller, pbx = peers
    dns.add("flaky.test", "A", "127.0.0.1")
    dns.fail("flaky.test", "A", times=1)
    ruri = f"sip:bob@flaky.test:{pbx.port}"
    with proxy_with_dns(tmp_path, broker, dns.port) as sip_port:
        first = caller.request("MESSAGE", ruri, ruri, sip_port)
        eventually(lambda: 503 in caller.statuses(first), "503 while the DNS server fails")

        def retried():
            call_id = caller.request("MESSAGE", ruri, ruri, sip_port)
            return eventually(lambda: pbx.messages(call_id) or 503 in caller.statuses(call_id),
                              "an outcome", timeout=5) and pbx.messages(call_id)

        eventually(retried, "a later MESSAGE to reach flaky.test once DNS answers", interval=0.2)
        assert dns.seen("flaky.test", "A") == 2
