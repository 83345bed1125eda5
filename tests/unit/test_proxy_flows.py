"""The proxy core end to end in memory: REGISTER, INVITE forking, CANCEL, BYE, timeouts."""
from __future__ import annotations

import pytest

from proxy.core.ports import Target
from tests.harness.corefake import ALICE, BOB, BYE_FROM_BOB, CoreRig, invite, register, response_to, subscriber_rig

# Event times and registration expiry come from the project's clock: the suite
# also runs this module a year ahead.
pytestmark = pytest.mark.clock


@pytest.fixture
def rig(tmp_path):
    return subscriber_rig(tmp_path, auth=False)


def types(rig):
    return [e.__class__.__name__ for e in rig.effects.events]


def test_register_then_call_answered_and_bye(rig):
    out = register(rig)
    assert out[0][0].status == 200 and "expires=" in out[0][0].get("contact")

    out = rig.receive(invite(), ALICE)
    trying, forwarded = out[0], out[1]
    assert trying[0].status == 100 and trying[1] == Target("udp", "192.0.2.10", 5060, None)
    fwd, dest = forwarded
    assert fwd.method == "INVITE" and fwd.uri == "sip:bob@192.0.2.20:5062"
    assert dest.host == "192.0.2.20" and dest.port == 5062
    assert fwd.get("max-forwards") == "69"
    assert fwd.values("record-route") == ["<sip:10.0.0.1:5060;lr>"]
    assert len(fwd.values("via")) == 2 and "received=192.0.2.10" not in fwd.values("via")[0]

    assert rig.receive(response_to(fwd, 100, "Trying", to_tag=None), BOB) == []   # hop by hop
    out = rig.receive(response_to(fwd, 180, "Ringing"), BOB)
    assert out[0][0].status == 180 and len(out[0][0].values("via")) == 1
    out = rig.receive(response_to(fwd, 200, "OK"), BOB)
    ok = out[0][0]
    assert ok.status == 200 and ok.values("record-route") == ["<sip:10.0.0.1:5060;lr>"]

    ack = """ACK sip:bob@192.0.2.20:5062 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKack1;rport
Route: <sip:10.0.0.1:5060;lr>
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: call-1
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

"""
    out = rig.receive(ack, ALICE)
    assert out[0][0].method == "ACK" and out[0][1].host == "192.0.2.20" and not out[0][0].has("route")

    bye = BYE_FROM_BOB
    out = rig.receive(bye, BOB)
    fbye, dest = out[0]
    assert fbye.method == "BYE" and dest.host == "192.0.2.10"
    out = rig.receive(response_to(fbye, 200, "OK", to_tag=None), ALICE)
    assert out[0][0].status == 200 and out[0][1].host == "192.0.2.20"
    assert types(rig) == ["InviteReceived", "InviteRouted", "CallProgress", "CallAnswered",
                          "CallAck", "CallBye"]
    bye_event = rig.effects.events[-1]
    assert bye_event.by == "callee" and bye_event.to_tag == "b1"
    received = rig.effects.events[0]
    assert received.caller.from_uri == "sip:alice@example.test"
    assert received.caller.display_name == "Alice" and received.user_agent == "phone-a"
    assert received.source.ip == "192.0.2.10"


def test_unknown_and_unregistered_users(rig):
    # auth is off: nobody is an authenticated subscriber, and a number that is no
    # subscriber of ours would go to the PSTN, so it is refused (no toll fraud)
    out = rig.receive(invite(to="carol"), ALICE)
    assert [m.status for m, _ in out] == [403]   # no 100 ahead of a local reply
    out = rig.receive(invite(call_id="call-2", branch="z9hG4bKinv2"), ALICE)
    assert [m.status for m, _ in out] == [480]
    failed = [e for e in rig.effects.events if e.__class__.__name__ == "CallFailed"]
    assert [(f.code, f.by_proxy) for f in failed] == [(403, True), (480, True)]


def test_busy_ack_is_hop_by_hop(rig):
    register(rig)
    out = rig.receive(invite(), ALICE)
    fwd = out[1][0]
    out = rig.receive(response_to(fwd, 486, "Busy Here"), BOB)
    sent = {(m.method or m.status) for m, _ in out}
    assert "ACK" in sent and 486 in sent
    assert types(rig)[-2:] == ["LegFailed", "CallFailed"]


def test_cancel_gives_487(rig):
    register(rig)
    fwd = rig.receive(invite(), ALICE)[1][0]
    rig.receive(response_to(fwd, 180, "Ringing"), BOB)
    cancel = """CANCEL sip:bob@example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1;rport
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>
Call-ID: call-1
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0

"""
    out = rig.receive(cancel, ALICE)
    assert out[0][0].status == 200 and out[1][0].method == "CANCEL"
    assert out[1][0].top_via == fwd.top_via
    out = rig.receive(response_to(fwd, 487, "Request Terminated"), BOB)
    assert {m.status or m.method for m, _ in out} == {"ACK", 487}
    assert "CallCancel" in types(rig) and types(rig)[-1] == "CallFailed"


def test_parallel_fork_first_2xx_wins(rig, tmp_path):
    register(rig)
    register(rig, port=5064, cseq=2)
    out = rig.receive(invite(), ALICE)
    branches = [m for m, _ in out if m.method == "INVITE"]
    assert len(branches) == 2
    rig.receive(response_to(branches[0], 180, "Ringing"), BOB)
    rig.receive(response_to(branches[1], 180, "Ringing", to_tag="b2"), BOB)
    out = rig.receive(response_to(branches[1], 200, "OK", to_tag="b2"), BOB)
    methods = [m.method or m.status for m, _ in out]
    assert 200 in methods and "CANCEL" in methods


def test_dialog_timeout_sends_bye_both_ways(tmp_path):
    rig = CoreRig(tmp_path, auth=False, max_dialog_seconds=5)
    rig.store.add_domain("example.test")
    rig.store.add_user("bob", "example.test", "x")
    rig.reload()
    register(rig)
    fwd = rig.receive(invite(), ALICE)[1][0]
    rig.receive(response_to(fwd, 200, "OK"), BOB)
    rig.effects.advance(6)
    byes = [(m, t) for m, t in rig.effects.take() if m.method == "BYE"]
    assert {t.host for _, t in byes} == {"192.0.2.10", "192.0.2.20"}
    to_bob = next(m for m, t in byes if t.host == "192.0.2.20")
    assert to_bob.uri == "sip:bob@192.0.2.20:5062" and "tag=a1" in to_bob.get("from")
    assert to_bob.cseq == (2, "BYE") and "cause=200" in to_bob.get("reason")
    to_alice = next(m for m, t in byes if t.host == "192.0.2.10")
    assert to_alice.uri == "sip:alice@192.0.2.10:5060" and "tag=b1" in to_alice.get("from")
    assert types(rig)[-1] == "DialogTimeout"


def test_max_forwards_zero_and_garbage(rig):
    out = rig.receive(invite().replace("Max-Forwards: 70", "Max-Forwards: 0"), ALICE)
    assert [m.status for m, _ in out] == [483]
    out = rig.receive(invite(call_id="c9", branch="z9hG4bKx").replace("CSeq: 1 INVITE", "CSeq: x INVITE"), ALICE)
    assert out[0][0].status == 400 and "CSeq" in out[0][0].reason
    assert rig.receive("garbage\n\n", ALICE) == []


def in_dialog_bye(ruri: str, routes: list[str]) -> str:
    route_lines = "".join(f"Route: {r}\n" for r in routes)
    return f"""BYE {ruri} SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye9;rport
{route_lines}From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: call-9
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0

"""


def test_loose_routing_pops_only_our_route(rig):
    out = rig.receive(in_dialog_bye("sip:bob@192.0.2.20:5062",
                                    ["<sip:10.0.0.1:5060;lr>", "<sip:192.0.2.50:5060;lr>"]), ALICE)
    (bye, target), = [(m, t) for m, t in out if m.method == "BYE"]
    assert bye.uri == "sip:bob@192.0.2.20:5062" and bye.values("route") == ["<sip:192.0.2.50:5060;lr>"]
    assert (target.host, target.port) == ("192.0.2.50", 5060)


def test_request_from_a_strict_router_gets_its_real_target_back(rig):
    # a strict router put our Record-Route URI in the R-URI and the remote target last in Route
    out = rig.receive(in_dialog_bye("sip:10.0.0.1:5060", ["<sip:bob@192.0.2.20:5062>"]), ALICE)
    (bye, target), = [(m, t) for m, t in out if m.method == "BYE"]
    assert bye.uri == "sip:bob@192.0.2.20:5062" and not bye.has("route")
    assert (target.host, target.port) == ("192.0.2.20", 5062)


def test_strict_next_hop_gets_the_request_uri_in_the_route_set(rig):
    out = rig.receive(in_dialog_bye("sip:bob@192.0.2.20:5062",
                                    ["<sip:10.0.0.1:5060;lr>", "<sip:192.0.2.50:5060>"]), ALICE)
    (bye, target), = [(m, t) for m, t in out if m.method == "BYE"]
    assert bye.uri == "sip:192.0.2.50:5060"                         # RFC 3261 §16.6 step 7
    assert bye.values("route") == ["<sip:bob@192.0.2.20:5062>"]
    assert (target.host, target.port) == ("192.0.2.50", 5060)


def test_in_dialog_request_not_routed_through_us_is_404(rig):
    out = rig.receive(in_dialog_bye("sip:bob@192.0.2.20:5062", []), ALICE)
    assert [m.status for m, _ in out] == [404]
