"""Next-hop resolution in the core (RFC 3263 over the sans-I/O resolver): a request
waits for DNS instead of blocking, and failures are cached only for the negative TTL."""
from __future__ import annotations

import pytest

from proxy.core.resolver import Answer
from proxy.infra.config import DnsSettings
from tests.harness.corefake import ALICE, CoreRig, invite

pytestmark = pytest.mark.clock

PBX = {
    ("pbx.test", "NAPTR"): Answer("ok", ((20, 10, "s", "SIP+D2T", "_sip._tcp.pbx.test"),
                                         (10, 10, "s", "SIP+D2U", "_sip._udp.pbx.test")), 300),
    ("_sip._udp.pbx.test", "SRV"): Answer("ok", ((20, 0, 5098, "backup.pbx.test"),
                                                 (10, 5, 5099, "host.pbx.test")), 300),
    ("host.pbx.test", "A"): Answer("ok", ("198.51.100.7",), 300),
}


@pytest.fixture
def rig(tmp_path):
    rig = CoreRig(tmp_path, auth=False, trusted_sources=("192.0.2.0/24",))
    rig.core.resolver.negative_ttl = DnsSettings().negative_ttl_seconds
    rig.store.add_domain("example.test")
    rig.reload()
    return rig


def asked(rig):
    return [(name, rdtype) for name, rdtype, _ in rig.effects.dns_queries]


def test_invite_waits_for_naptr_srv_a_and_goes_to_the_srv_target(rig):
    out = rig.receive(invite(to="bob").replace("sip:bob@example.test SIP/2.0", "sip:bob@pbx.test SIP/2.0"), ALICE)
    assert [m.status for m, _ in out] == [100]                  # nothing blocks, nothing sent yet
    assert asked(rig) == [("pbx.test", "NAPTR")]
    rig.effects.answer_dns(PBX)
    (fwd, target), = [(m, t) for m, t in rig.effects.take() if m.method == "INVITE"]
    assert (target.transport, target.host, target.port) == ("udp", "198.51.100.7", 5099)
    assert fwd.uri == "sip:bob@pbx.test"
    # cached: the next call needs no query at all
    out = rig.receive(invite(call_id="c2", branch="z9hG4bKc2").replace(
        "sip:bob@example.test SIP/2.0", "sip:bob@pbx.test SIP/2.0"), ALICE)
    assert [t.port for m, t in out if m.method == "INVITE"] == [5099] and asked(rig) == []


def test_a_port_in_the_uri_means_a_records_only(rig):
    rig.receive(invite().replace("sip:bob@example.test SIP/2.0", "sip:bob@pbx.test:5070;transport=tcp SIP/2.0"),
                ALICE)
    assert asked(rig) == [("pbx.test", "A")]
    rig.effects.answer_dns({("pbx.test", "A"): Answer("ok", ("198.51.100.9",), 60)})
    (target,) = [t for m, t in rig.effects.take() if m.method == "INVITE"]
    assert (target.transport, target.host, target.port) == ("tcp", "198.51.100.9", 5070)


def test_a_transient_failure_is_retried_after_the_negative_ttl(rig):
    def call(n):
        return rig.receive(invite(call_id=f"f{n}", branch=f"z9hG4bKf{n}").replace(
            "sip:bob@example.test SIP/2.0", "sip:bob@flaky.test:5070 SIP/2.0"), ALICE)

    call(1)
    rig.effects.answer_dns({("flaky.test", "A"): Answer("servfail")})
    (resp,) = [m for m, _ in rig.effects.take() if m.status and m.status >= 300]
    assert resp.status == 503 and resp.get("retry-after") == "5"
    assert [m.status for m, _ in call(2)] == [503] and asked(rig) == []   # cached, briefly (no 100 first)
    rig.effects.advance(6)
    call(3)
    assert asked(rig) == [("flaky.test", "A")]                 # asked again: not cached forever
    rig.effects.answer_dns({("flaky.test", "A"): Answer("ok", ("198.51.100.8",), 60)})
    assert [t.host for m, t in rig.effects.take() if m.method == "INVITE"] == ["198.51.100.8"]


def test_a_name_that_does_not_exist_gets_604(rig):
    rig.receive(invite().replace("sip:bob@example.test SIP/2.0", "sip:bob@nowhere.test:5060 SIP/2.0"), ALICE)
    rig.effects.answer_dns({})
    assert [m.status for m, _ in rig.effects.take()] == [604]
    assert rig.effects.events[-1].__class__.__name__ == "CallFailed"


def test_cancel_while_dns_is_asked_ends_the_call(rig):
    rig.receive(invite().replace("sip:bob@example.test SIP/2.0", "sip:bob@pbx.test SIP/2.0"), ALICE)
    out = rig.receive("""CANCEL sip:bob@pbx.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1;rport
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>
Call-ID: call-1
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0

""", ALICE)
    assert sorted(m.status for m, _ in out) == [200, 487]
    rig.effects.answer_dns(PBX)
    assert [m for m, _ in rig.effects.take() if m.method == "INVITE"] == []


# -- the resolver alone: bounds, and names that need no DNS ------------------------------------

def resolver(**kw):
    from proxy.core.resolver import Resolver
    asked: list = []
    r = Resolver(query=lambda name, rdtype, feed: asked.append((name, rdtype, feed)), now=lambda: 0.0,
                 hosts={"localhost": "127.0.0.1", "pbx.lan": "10.1.2.3"}, **kw)
    return r, asked


def test_numeric_and_hosts_file_names_resolve_at_once():
    from proxy.core.ports import Target
    r, asked = resolver()
    assert r.resolve("sip", "localhost", None, None) == Target("udp", "127.0.0.1", 5060)
    assert r.resolve("sip", "PBX.lan.", 5070, "tcp") == Target("tcp", "10.1.2.3", 5070)
    assert r.resolve("sip", "[2001:db8::1]", None, None) == Target("udp", "2001:db8::1", 5060)
    assert asked == []


def test_lookups_in_flight_and_the_cache_are_bounded():
    from proxy.core.resolver import Failure
    r, asked = resolver(max_in_flight=2, cache_size=3)
    outcomes: list = []
    for n in range(3):
        r.when_resolved("sip", f"h{n}.test", 5060, None, outcomes.append)
    assert len(asked) == 2 and outcomes == [Failure(transient=True)]   # the third: 503 at once
    for n in range(6):
        r.feed((f"x{n}.test", "A"), Answer("ok", ("192.0.2.1",), 60))
    assert len(r.cache) == 3


def test_read_hosts_keeps_ipv4_names(tmp_path):
    from proxy.runtime.dns import read_hosts
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n# x\n10.0.0.5 gw1.lan gw1  # comment\n")
    assert read_hosts(hosts) == {"localhost": "127.0.0.1", "gw1.lan": "10.0.0.5", "gw1": "10.0.0.5"}
