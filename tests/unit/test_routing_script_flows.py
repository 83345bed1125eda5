"""The default routing script end to end in memory: gateways, failover, dialplan,
blacklists, permissions, groups and call forwarding, provisioned with the CLI."""
from __future__ import annotations

import pytest

from proxy.core.ports import Target
from proxy.infra import clock
from tests.harness.corefake import ALICE, BOB, CoreRig, invite, register, response_to

# Calls carry event times, registrations expire and timed routes match on the
# project's clock: the suite also runs this module a year ahead.
pytestmark = pytest.mark.clock

GW1 = Target("udp", "198.51.100.1", 5060)
GW2 = Target("udp", "198.51.100.2", 5060)


@pytest.fixture
def rig(tmp_path):
    rig = CoreRig(tmp_path, auth=True, trusted_sources=("192.0.2.20/32", "192.0.2.30/32"))
    rig.cli("domain", "add", "example.test")
    rig.cli("user", "add", "alice@example.test", "--password", "a-secret")
    rig.cli("user", "add", "bob@example.test", "--password", "b-secret")
    rig.cli("gateway", "add", "gw1", "--address", "198.51.100.1:5060", "--strip", "1", "--prefix", "49")
    rig.cli("gateway", "add", "gw2", "--address", "198.51.100.2:5060")
    rig.cli("route", "add", "--prefix", "0", "--gateways", "gw1,gw2")
    rig.cli("route", "add", "--prefix", "0044", "--gateways", "gw2")
    return rig


def call(rig, number, *, call_id="c1", user="alice", password="a-secret"):
    return rig.authenticated(invite(call_id=call_id, to=number, branch=f"z9hG4bK{call_id}"),
                             ALICE, user, password)


def forwarded(out):
    return [(m, t) for m, t in out if m.method == "INVITE"]


def legs(rig):
    return [e.leg for e in rig.effects.events if e.__class__.__name__ == "InviteRouted"]


def test_longest_prefix_picks_the_gateway_and_rewrites_the_number(rig):
    (fwd, target), = forwarded(call(rig, "00441234"))
    assert target == GW2 and fwd.uri.startswith("sip:00441234@198.51.100.2")
    (fwd, target), = forwarded(call(rig, "0301234", call_id="c2"))
    assert target == GW1 and fwd.uri.startswith("sip:49301234@198.51.100.1")   # strip 1, prefix 49
    assert [leg.gateway for leg in legs(rig)] == ["gw2", "gw1"]


def test_timed_routes_match_on_the_project_clock(rig):
    """Routes for one weekday each (UTC): today's, by proxy.infra.clock, wins;
    the standing prefix-0 route (gw1 first) would take the call otherwise."""
    today = clock.utcnow().isoweekday()
    for day, gateway in ((today % 7 + 1, "gw1"), ((today - 2) % 7 + 1, "gw1"), (today, "gw2")):
        rig.cli("route", "add", "--prefix", "07", "--gateways", gateway, "--weekdays", str(day))
    (fwd, target), = forwarded(call(rig, "0712345"))
    if clock.utcnow().isoweekday() != today:
        pytest.skip("the day changed during the call")
    assert target == GW2 and [leg.gateway for leg in legs(rig)] == ["gw2"]


def test_failover_on_503_to_the_next_gateway_is_one_call(rig):
    (fwd, _), = forwarded(call(rig, "0301234"))
    out = rig.receive(response_to(fwd, 503, "Service Unavailable"), GW1)
    assert {m.method for m, _ in out if m.method} == {"ACK", "INVITE"}
    assert not [m for m, _ in out if m.status]                 # the caller saw nothing yet
    (fwd2, target), = forwarded(out)
    assert target == GW2 and fwd2.uri.startswith("sip:0301234@198.51.100.2")
    out = rig.receive(response_to(fwd2, 200, "OK", to_tag="g2"), GW2)
    assert [m.status for m, _ in out if m.status] == [200]
    first, second = legs(rig)
    assert (second.cause, second.parent, second.gateway) == ("failover", 0, "gw2")
    types = [e.__class__.__name__ for e in rig.effects.events]
    assert "CallFailed" not in types and types.count("LegFailed") == 1


def test_6xx_is_final_and_not_failed_over(rig):
    (fwd, _), = forwarded(call(rig, "0301234"))
    out = rig.receive(response_to(fwd, 603, "Decline"), GW1)
    assert forwarded(out) == [] and 603 in [m.status for m, _ in out]


def test_dead_gateway_is_skipped(rig):
    rig.routing.prober.mark_down("gw1", 0.0) if rig.routing.prober else None
    rig.routing.is_up = lambda name: name != "gw1"             # as the prober reports it
    (fwd, target), = forwarded(call(rig, "0301234"))
    assert target == GW2


def test_blacklist_473(rig):
    rig.cli("blacklist", "add", "default", "0900")
    out = call(rig, "09001234")
    assert 473 in [m.status for m, _ in out] and forwarded(out) == []


def test_dialplan_rewrites_what_the_gateway_receives(rig):
    rig.cli("dialplan", "add", "0", "--match", r"^\+49(\d+)$", "--subst", r"^\+49(\d+)$", "--repl", r"0\1")
    (fwd, target), = forwarded(call(rig, "+49301234"))
    assert target == GW1 and fwd.uri.startswith("sip:49301234@")   # +49301234 -> 0301234 -> gw1 rules


def test_group_restricted_destination_403(rig):
    rig.cli("group", "require", "00", "international")
    out = call(rig, "00441234")
    assert 403 in [m.status for m, _ in out] and forwarded(out) == []
    rig.cli("group", "add", "alice@example.test", "international")
    assert forwarded(call(rig, "00441234", call_id="c2"))


def test_trusted_gateway_calls_a_local_user_without_auth(rig):
    rig.cli("trusted", "add", "198.51.100.0/24")
    register(rig)
    inbound = invite(to="bob").replace("192.0.2.10:5060;branch", "198.51.100.1:5060;branch") \
        .replace("sip:alice@example.test", "sip:+4930999@198.51.100.1")
    out = rig.receive(inbound, GW1)
    assert [m.status for m, _ in out if m.status] == [100]
    (fwd, target), = forwarded(out)
    assert target == Target("udp", "192.0.2.20", 5062)


def test_forward_on_busy_to_another_user(rig):
    rig.cli("user", "add", "carol@example.test", "--password", "c")
    rig.cli("forward", "set", "bob@example.test", "--busy", "carol@example.test")
    register(rig)
    register(rig, user="carol", port=5064, host="192.0.2.30")
    (fwd, _), = forwarded(call(rig, "bob"))
    out = rig.receive(response_to(fwd, 486, "Busy Here"), BOB)
    (fwd2, target), = forwarded(out)
    assert target == Target("udp", "192.0.2.30", 5064) and fwd2.uri == "sip:carol@192.0.2.30:5064"
    second = legs(rig)[1]
    assert (second.cause, second.parent, second.reason, second.forwarded_by) == \
        ("forward", 0, "busy", "bob@example.test")


def test_forward_on_no_answer_cancels_the_first_leg(rig):
    rig.cli("forward", "media", "add", "voicemail", "sip:vm@192.0.2.99:5090")
    rig.cli("forward", "set", "bob@example.test", "--no-answer", "voicemail", "--timeout", "5")
    register(rig)
    (fwd, _), = forwarded(call(rig, "bob"))
    rig.receive(response_to(fwd, 180, "Ringing"), BOB)
    rig.effects.advance(5.5)
    cancels = [m for m, _ in rig.effects.take() if m.method == "CANCEL"]
    assert cancels and cancels[0].top_via == fwd.top_via
    out = rig.receive(response_to(fwd, 487, "Request Terminated"), BOB)
    (fwd2, target), = forwarded(out)
    assert target == Target("udp", "192.0.2.99", 5090) and fwd2.uri == "sip:vm@192.0.2.99:5090"
    assert legs(rig)[1].reason == "no_answer"
    assert 487 not in [m.status for m, _ in out]               # the caller keeps ringing


def test_unconditional_forward_and_loop_detection(rig):
    rig.cli("user", "add", "carol@example.test", "--password", "c")
    rig.cli("forward", "set", "bob@example.test", "--always", "carol@example.test")
    rig.cli("forward", "set", "carol@example.test", "--always", "bob@example.test")
    out = call(rig, "bob")
    assert 482 in [m.status for m, _ in out] and forwarded(out) == []
