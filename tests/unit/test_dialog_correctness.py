"""Dialog correctness (issue 13): forked calls answered twice, and where in-dialog requests go."""
from __future__ import annotations

import pytest

from proxy.contract import callfold
from proxy.core.ports import Target
from tests.harness.corefake import ALICE, BOB, invite, register, response_to, subscriber_rig

pytestmark = pytest.mark.clock

BOB2 = Target("udp", "192.0.2.20", 5064)


@pytest.fixture
def rig(tmp_path):
    return subscriber_rig(tmp_path, auth=False, max_dialog_seconds=60)


def names(rig):
    return [e.__class__.__name__ for e in rig.effects.events]


def from_alice(method: str, to_tag: str, cseq: int, ruri: str, branch: str) -> str:
    return f"""{method} {ruri} SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport
Route: <sip:10.0.0.1:5060;lr>
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag={to_tag}
Call-ID: call-1
CSeq: {cseq} {method}
Max-Forwards: 70
Content-Length: 0

"""


def answer(branch, status, reason, tag):
    """The response of the phone a branch went to (its Contact is the branch's R-URI)."""
    return response_to(branch, status, reason, to_tag=tag).replace(
        "<sip:bob@192.0.2.20:5062>", f"<{branch.uri}>")


def forked(rig):
    """Bob registered twice (ports 5062 and 5064): the INVITE forks, b1 answers on 5062."""
    register(rig)
    register(rig, port=5064, cseq=2)
    out = rig.receive(invite(), ALICE)
    branches = sorted((m for m, _ in out if m.method == "INVITE"), key=lambda m: m.uri)
    assert [m.uri for m in branches] == ["sip:bob@192.0.2.20:5062", "sip:bob@192.0.2.20:5064"]
    return branches


def answered_twice(rig):
    """Bob registered twice; both phones answer: the proxy relays both 2xx upstream."""
    first, second = forked(rig)
    rig.receive(answer(first, 180, "Ringing", "b1"), BOB)
    rig.receive(answer(second, 180, "Ringing", "b2"), BOB2)
    up1 = rig.receive(answer(first, 200, "OK", "b1"), BOB)
    up2 = rig.receive(answer(second, 200, "OK", "b2"), BOB2)
    oks = [m for m, t in up1 + up2 if m.status == 200 and t == ALICE]
    assert [m.get("to").rsplit("tag=", 1)[1] for m in oks] == ["b1", "b2"]   # §16.7 step 5
    # the caller ACKs both (RFC 3261 §13.2.2.4) and BYEs the extra one
    rig.receive(from_alice("ACK", "b1", 1, "sip:bob@192.0.2.20:5062", "z9hG4bKack1"), ALICE)
    rig.receive(from_alice("ACK", "b2", 1, "sip:bob@192.0.2.20:5064", "z9hG4bKack2"), ALICE)
    out = rig.receive(from_alice("BYE", "b2", 2, "sip:bob@192.0.2.20:5064", "z9hG4bKbye2"), ALICE)
    (bye, target), = [(m, t) for m, t in out if m.method == "BYE"]
    assert (target.host, target.port) == ("192.0.2.20", 5064) and "tag=b2" in bye.get("to")
    rig.receive(response_to(bye, 200, "OK", to_tag=None), BOB2)


def test_bye_of_the_extra_dialog_leaves_the_answered_call_up(rig):
    answered_twice(rig)
    assert names(rig).count("CallAnswered") == 1
    assert "CallBye" not in names(rig) and names(rig).count("CallAck") == 1
    state = callfold.fold(rig.effects.events)
    assert state.answered.to_tag == "b1" and not callfold.is_over(state)   # CDR still open
    assert len(rig.core.dialogs) == 1
    live = rig.core.dialogs.get("call-1")
    assert live is not None and live.callee_tag == "b1"


def test_the_live_dialog_keeps_its_max_duration(rig):
    answered_twice(rig)
    rig.effects.take()
    rig.effects.advance(61)
    byes = [(m, t) for m, t in rig.effects.take() if m.method == "BYE"]
    assert {(t.host, t.port) for _, t in byes} == {("192.0.2.10", 5060), ("192.0.2.20", 5062)}
    assert all("b1" in (m.get("to") + m.get("from")) for m, _ in byes)
    assert names(rig)[-1] == "DialogTimeout"
    state = callfold.fold(rig.effects.events)
    (row,) = [r for r in callfold.finish(state, 0) if r.disposition == "answered"]
    assert row.to_tag == "b1" and row.hangup_by == "timeout"


def test_teardown_by_call_id_ends_the_live_dialog(rig):
    from proxy.contract import commands as cmd
    answered_twice(rig)
    rig.effects.take()
    rig.engine.on_command(cmd.Teardown(id="c1", ts_ms=0, call_id="call-1", reason="ops"))
    byes = [(m, t) for m, t in rig.effects.take() if m.method == "BYE"]
    assert {(t.host, t.port) for _, t in byes} == {("192.0.2.10", 5060), ("192.0.2.20", 5062)}
    assert names(rig)[-1] == "DialogTeardown" and rig.effects.events[-1].result == "sent"


def test_extra_dialog_left_up_by_the_caller_is_ended_by_the_proxy(rig):
    """A caller that keeps the second dialog and hangs up the billed one must not get
    an unbilled call: the proxy ends extra dialogs itself after a grace period."""
    first, second = forked(rig)
    rig.receive(answer(first, 200, "OK", "b1"), BOB)
    rig.receive(answer(second, 200, "OK", "b2"), BOB2)
    rig.effects.take()
    rig.effects.advance(40)
    byes = [(m, t) for m, t in rig.effects.take() if m.method == "BYE"]
    assert {(t.host, t.port) for _, t in byes} == {("192.0.2.10", 5060), ("192.0.2.20", 5064)}
    assert "DialogTimeout" not in names(rig)
    assert not callfold.is_over(callfold.fold(rig.effects.events))


# -- where in-dialog requests go ----------------------------------------------------------

def call_answered_with_contact(rig, contact: str, source: Target):
    fwd = rig.receive(invite(), ALICE)[1][0]
    ok = response_to(fwd, 200, "OK").replace("<sip:bob@192.0.2.20:5062>", f"<{contact}>")
    rig.receive(ok, source)


def test_in_dialog_requests_follow_a_contact_elsewhere(rig):
    """A phone (or a proxy behind us that does not record-route) answers with a
    Contact other than where the INVITE went: ACK and BYE go to that Contact."""
    register(rig)                                          # not NATed: Contact = source
    call_answered_with_contact(rig, "sip:bob@192.0.2.30:5070", BOB)
    out = rig.receive(from_alice("ACK", "b1", 1, "sip:bob@192.0.2.30:5070", "z9hG4bKack1"), ALICE)
    assert [(t.host, t.port) for m, t in out if m.method == "ACK"] == [("192.0.2.30", 5070)]
    out = rig.receive(from_alice("BYE", "b1", 2, "sip:bob@192.0.2.30:5070", "z9hG4bKbye1"), ALICE)
    assert [(t.host, t.port) for m, t in out if m.method == "BYE"] == [("192.0.2.30", 5070)]


def test_in_dialog_requests_to_a_natted_phone_go_to_its_source(rig):
    nat = Target("udp", "203.0.113.5", 40000)
    rig.receive("""REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bKregn;rport
From: <sip:bob@example.test>;tag=r1
To: <sip:bob@example.test>
Call-ID: reg-nat
CSeq: 1 REGISTER
Contact: <sip:bob@192.168.1.20:5062>
Expires: 3600
Max-Forwards: 70
Content-Length: 0

""", nat)
    fwd, dest = rig.receive(invite(), ALICE)[1]
    assert (dest.host, dest.port) == ("203.0.113.5", 40000)
    ok = response_to(fwd, 200, "OK").replace("<sip:bob@192.0.2.20:5062>", "<sip:bob@192.168.1.20:5062>")
    rig.receive(ok, nat)
    out = rig.receive(from_alice("BYE", "b1", 2, "sip:bob@192.168.1.20:5062", "z9hG4bKbye1"), ALICE)
    assert [(t.host, t.port) for m, t in out if m.method == "BYE"] == [("203.0.113.5", 40000)]
