"""Toll fraud (issue 13): nothing reaches a gateway, the static route, another
domain or a pre-set Route unless an authenticated local subscriber or a trusted
source sent it, whatever the From says.  The real proxy core and default script,
provisioned with the CLI; the gateway is 198.51.100.1."""
from __future__ import annotations

import pytest

from proxy.core.engine import Engine
from proxy.core.ports import Target
from proxy.script.loader import load_script
from proxy.script.runner import ScriptRouting
from tests.harness.corefake import ALICE, BOB, CoreRig

pytestmark = pytest.mark.clock

GW = Target("udp", "198.51.100.1", 5060)
NUMBER = "004930123456"
MALLORY = Target("udp", "203.0.113.66", 5060)


@pytest.fixture
def rig(tmp_path):
    rig = CoreRig(tmp_path, auth=True)
    rig.cli("domain", "add", "example.test")
    rig.cli("user", "add", "alice@example.test", "--password", "a-secret")
    rig.cli("user", "add", "bob@example.test", "--password", "b-secret")
    rig.cli("gateway", "add", "gw1", "--address", "198.51.100.1:5060")
    rig.cli("route", "add", "--prefix", "0", "--gateways", "gw1")
    return rig


def invite(ruri=f"sip:{NUMBER}@example.test", from_uri="sip:mallory@evil.test", *, call_id="fraud-1",
           source=MALLORY, extra=""):
    return f"""INVITE {ruri} SIP/2.0
Via: SIP/2.0/UDP {source.host}:{source.port};branch=z9hG4bK{call_id};rport
From: <{from_uri}>;tag=m1
To: <{ruri}>
Call-ID: {call_id}
CSeq: 1 INVITE
Contact: <sip:caller@{source.host}:{source.port}>
Max-Forwards: 70
{extra}Content-Type: application/sdp
Content-Length: 4

v=0
"""


def outcome(out):
    """(final statuses the caller got, every INVITE the proxy sent on)."""
    return ([m.status for m, _ in out if m.status and m.status >= 200],
            [(m, t) for m, t in out if m.method == "INVITE"])


def test_foreign_caller_without_credentials_never_reaches_the_gateway(rig):
    finals, sent = outcome(rig.receive(invite(), MALLORY))
    assert finals == [403] and sent == []


def test_from_with_a_trailing_dot_is_challenged_as_local(rig):
    finals, sent = outcome(rig.receive(invite(from_uri="sip:alice@example.test."), MALLORY))
    assert finals == [407] and sent == []


def test_from_in_upper_case_is_challenged_as_local(rig):
    finals, sent = outcome(rig.receive(invite(from_uri="sip:alice@EXAMPLE.Test"), MALLORY))
    assert finals == [407] and sent == []


def test_from_the_proxys_own_address_is_challenged_as_the_served_domain(rig):
    out = rig.receive(invite(from_uri="sip:alice@10.0.0.1:5060"), MALLORY)
    finals, sent = outcome(out)
    assert finals == [407] and sent == []
    (challenge,) = [m for m, _ in out if m.status == 407]
    assert 'realm="example.test"' in challenge.get("proxy-authenticate")


def test_request_uri_of_the_proxys_own_address(rig):
    finals, sent = outcome(rig.receive(invite(ruri=f"sip:{NUMBER}@10.0.0.1:5060"), MALLORY))
    assert finals == [403] and sent == []


def test_foreign_caller_with_a_route_to_the_gateway(rig):
    out = rig.receive(invite(extra="Route: <sip:198.51.100.1:5060;lr>\n"), MALLORY)
    finals, sent = outcome(out)
    assert finals == [403] and sent == []
    # the same with the gateway in the Request-URI (a foreign domain for us)
    finals, sent = outcome(rig.receive(invite(ruri=f"sip:{NUMBER}@198.51.100.1:5060", call_id="fraud-2"),
                                       MALLORY))
    assert finals == [403] and sent == []


def test_static_route_is_off_net_too(tmp_path):
    rig = CoreRig(tmp_path, auth=True, static_route="sip:198.51.100.1:5060")
    rig.cli("domain", "add", "example.test")
    finals, sent = outcome(rig.receive(invite(), MALLORY))
    assert finals == [403] and sent == []


def test_foreign_caller_still_reaches_a_local_subscriber_unauthenticated(rig):
    register_bob(rig)
    out = rig.receive(invite(ruri="sip:bob@example.test"), MALLORY)
    finals, sent = outcome(out)
    assert finals == [] and [t for _, t in sent] == [BOB]


def test_foreign_caller_forwarded_by_a_subscriber_to_the_pstn_stops_at_the_gateway(rig):
    rig.cli("forward", "set", "bob@example.test", "--always", f"sip:{NUMBER}@example.test")
    finals, sent = outcome(rig.receive(invite(ruri="sip:bob@example.test"), MALLORY))
    assert finals == [403] and sent == []


def test_authenticated_subscriber_reaches_the_gateway(rig):
    out = rig.authenticated(invite(from_uri="sip:alice@example.test", source=ALICE), ALICE,
                            "alice", "a-secret")
    finals, sent = outcome(out)
    assert finals == [] and [t for _, t in sent] == [GW]


def test_trusted_source_reaches_the_gateway_unauthenticated(rig):
    rig.cli("trusted", "add", "203.0.113.0/24")
    finals, sent = outcome(rig.receive(invite(), MALLORY))
    assert finals == [] and [t for _, t in sent] == [GW]


def test_relay_refuses_off_net_for_strangers_whatever_the_script_says(rig, tmp_path):
    """Safety net: an operator script that forgot the rule cannot open the hole."""
    script = tmp_path / "careless_routes.py"
    script.write_text("def route(ctx):\n"
                      "    if ctx.route_to_gateways():\n"
                      "        return ctx.relay()\n"
                      "    ctx.relay()\n")
    rig.engine = Engine(rig.core, ScriptRouting(rig.core, load_script(str(script))))
    finals, sent = outcome(rig.receive(invite(), MALLORY))
    assert finals == [403] and sent == []
    finals, sent = outcome(rig.receive(invite(ruri="sip:x@elsewhere.test", call_id="fraud-2"), MALLORY))
    assert finals == [403] and sent == []
    # the explicit, documented opt-out
    script.write_text("def route(ctx):\n"
                      "    ctx.allow_unauthenticated_offnet = True\n"
                      "    ctx.route_to_gateways()\n"
                      "    ctx.relay()\n")
    rig.engine = Engine(rig.core, ScriptRouting(rig.core, load_script(str(script))))
    finals, sent = outcome(rig.receive(invite(call_id="fraud-3"), MALLORY))
    assert finals == [] and [t for _, t in sent] == [GW]


def register_bob(rig):
    out = rig.authenticated(
        "REGISTER sip:example.test SIP/2.0\n"
        "Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKreg1;rport\n"
        "From: <sip:bob@example.test>;tag=r1\nTo: <sip:bob@example.test>\n"
        "Call-ID: reg-bob\nCSeq: 1 REGISTER\nContact: <sip:bob@192.0.2.20:5062>\n"
        "Expires: 3600\nMax-Forwards: 70\nContent-Length: 0\n\n", BOB, "bob", "b-secret")
    assert [m.status for m, _ in out] == [200]



def test_forged_in_dialog_invite_for_an_unknown_dialog_never_reaches_the_gateway(rig):
    """A To-tag and our own Route make a fresh INVITE look like a re-INVITE."""
    forged = invite(ruri=f"sip:{NUMBER}@198.51.100.1:5060", extra="Route: <sip:10.0.0.1:5060;lr>\n") \
        .replace(f"To: <sip:{NUMBER}@198.51.100.1:5060>", f"To: <sip:{NUMBER}@198.51.100.1:5060>;tag=forged")
    finals, sent = outcome(rig.receive(forged, MALLORY))
    assert sent == [] and finals and finals[0] in (403, 481)


def test_keepalive_options_to_the_proxy_are_answered_here_and_nothing_else_is_let_through(rig):
    """OPTIONS to the proxy itself are answered before authentication (keep-alive
    pings): locally, never relayed; an OPTIONS to a number is still challenged, and
    a pre-set Route to the gateway does not turn the ping into a relay."""
    def options(ruri, call_id, extra=""):
        text = invite(ruri=ruri, from_uri="sip:alice@example.test", call_id=call_id, extra=extra)
        return text.replace("INVITE", "OPTIONS")

    for ruri, call_id, extra in (("sip:example.test", "ka-1", ""), ("sip:10.0.0.1:5060", "ka-2", ""),
                                 ("sip:example.test", "ka-3", "Route: <sip:198.51.100.1:5060;lr>\n")):
        out = rig.receive(options(ruri, call_id, extra), MALLORY)
        assert [m.status for m, _ in out] == [200], (ruri, extra)
        assert all(t == MALLORY for _, t in out)
    out = rig.receive(options(f"sip:{NUMBER}@example.test", "ka-4"), MALLORY)
    assert [m.status for m, _ in out] == [407] and all(t == MALLORY for _, t in out)
