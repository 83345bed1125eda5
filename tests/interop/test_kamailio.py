"""Kamailio 5.6 as a peer proxy in front of and behind `sipledger up` (default
configuration), SIPp as the end phones (its scenarios follow the route set).

In front:  caller --> Kamailio --> sipledger --> callee (registered at sipledger)
Behind:    caller --> sipledger --> Kamailio (a gateway) --> callee

Trust, in front: Kamailio authenticates nothing and is NOT a trusted source;
sipledger challenges the caller through it (the 407 travels back via
Kamailio, the credentials come forward through it).

What "through both" means here, checked on the messages themselves: the 200
the caller gets holds both Record-Route entries; the ACK and BYE the caller
sends carry both as Route; the callee receives them with a Via of each proxy
(3 Vias), and Kamailio logged them; the same for the callee's BYE towards the
caller.  A CANCEL is hop by hop: the callee gets the last proxy's, Kamailio
logged the one it relayed or got.
"""
from __future__ import annotations

import itertools

import pytest

from tests.harness.calls import DOMAIN, PASSWORDS, assert_completed, assert_uas_completed, registered
from tests.harness.sipp import SippResult, run_uac

pytestmark = [pytest.mark.interop]

_prefixes = itertools.count(1)


def call(target, sipp_dir, callee: str, scenario: str = "uac_call", hold_ms: int = 200) -> SippResult:
    return run_uac(scenario, target, {"caller": "alice", "callee": callee, "domain": DOMAIN}, 15,
                   auth=("alice", PASSWORDS["alice"]), auth_uri=f"{callee}@{DOMAIN}",
                   workdir=sipp_dir, hold_ms=hold_ms)


def hop(addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def vias(message) -> list[str]:
    return message.headers_all("Via")


def assert_route_set_followed(res: SippResult, proxies) -> None:
    """The caller's 200 lists every proxy's Record-Route, and its ACK and BYE
    carry them all as Route."""
    (ok,) = [m for m in res.received(200) if m.cseq_method == "INVITE"][-1:]
    record_route = " ".join(ok.headers_all("Record-Route"))
    for proxy in proxies:
        assert hop(proxy) in record_route, f"no Record-Route of {hop(proxy)} in the 200\n{ok.raw}"
    assert len(ok.headers_all("Record-Route")) == len(proxies), ok.raw
    for method in ("ACK", "BYE"):
        sent = [m for m in res.sent(method) if m.header("Route")]
        assert sent, f"the caller's {method} has no Route\n{res.describe()}"
        route = " ".join(sent[-1].headers_all("Route"))
        for proxy in proxies:
            assert hop(proxy) in route, f"{method} Route lacks {hop(proxy)}\n{sent[-1].raw}"


def assert_through(message, proxies) -> None:
    """``message`` (received by an end phone) passed every proxy: a Via of each."""
    via = vias(message)
    for proxy in proxies:
        assert any(hop(proxy) in v for v in via), f"{message.start_line} did not pass {hop(proxy)}\n{message.raw}"


def assert_hop_by_hop(cancel, kamailio, last_hop) -> None:
    """A CANCEL is hop by hop (RFC 3261 16.10): each proxy sends its own, with
    its own Via only.  The callee's came from the last proxy; Kamailio saw one."""
    assert len(vias(cancel)) == 1 and hop(last_hop) in vias(cancel)[0], cancel.raw
    assert kamailio.received("CANCEL"), "Kamailio never saw a CANCEL\n" + kamailio.log_text()[-3000:]


# ------------------------------------------------------------------ in front


@pytest.fixture
def in_front(sl, kamailios):
    return kamailios(sl.sip_addr)


def test_in_front_challenge_travels_back_through_kamailio_and_the_call_follows_both_routes(
        sl, in_front, uas_factory, sipp_dir):
    callee = uas_factory("uas_answer")
    with registered(sl, "bob", callee, sipp_dir):
        res = call(in_front.addr, sipp_dir, "bob")
        assert_completed(res, "alice -> Kamailio -> sipledger -> bob")
        assert_uas_completed(callee, "bob")
    # sipledger challenged through Kamailio, which was not trusted
    assert res.received(407), res.describe()
    assert len(in_front.received("INVITE")) == 2, in_front.log_text()[-3000:]
    assert_route_set_followed(res, [in_front.addr, sl.sip_addr])
    for method in ("ACK", "BYE"):
        (msg,) = callee.received(method)
        assert_through(msg, [in_front.addr, sl.sip_addr])
        assert in_front.received(method), f"Kamailio never saw the {method}"


def test_in_front_a_baresip_phone_registers_and_calls_through_kamailio(sl, in_front, phones):
    """A real phone with Kamailio as its outbound proxy: the 401 of its REGISTER
    and the 407 of its INVITE come back through Kamailio, it answers them, the
    call is set up and torn down through both proxies."""
    alice = phones("alice", outbound=in_front.addr)
    bob = phones("bob", auto_answer=True)
    alice.wait_registered()
    bob.wait_registered()
    alice.command("dial", f"sip:bob@{DOMAIN}")
    call_id = alice.wait_event("CALL_ESTABLISHED", 10)["id"]
    bob.wait_event("CALL_ESTABLISHED", 10, call_id=call_id)
    alice.command("hangup")
    alice.wait_event("CALL_CLOSED", 10, call_id=call_id)
    bob.wait_event("CALL_CLOSED", 10, call_id=call_id)
    assert len(in_front.received("REGISTER")) >= 2, "REGISTER and its answer to the 401 via Kamailio"
    assert len(in_front.received("INVITE")) >= 2, "INVITE and its answer to the 407 via Kamailio"
    assert in_front.received("ACK") and in_front.received("BYE"), in_front.log_text()[-3000:]


def test_in_front_callee_hangs_up_through_both(sl, in_front, uas_factory, sipp_dir):
    callee = uas_factory("uas_answer_hangup", hold_ms=300)
    with registered(sl, "bob", callee, sipp_dir):
        res = call(in_front.addr, sipp_dir, "bob", scenario="uac_wait_bye")
        assert_completed(res, "alice (waiting for the BYE) via Kamailio")
        assert_uas_completed(callee, "bob hanging up")
    (bye,) = res.received("BYE")
    assert_through(bye, [sl.sip_addr, in_front.addr])
    assert in_front.received("BYE")


def test_in_front_cancel_through_both(sl, in_front, uas_factory, sipp_dir):
    callee = uas_factory("uas_noanswer")
    with registered(sl, "bob", callee, sipp_dir):
        res = call(in_front.addr, sipp_dir, "bob", scenario="uac_cancel", hold_ms=300)
        assert_completed(res, "alice cancels via Kamailio")
        assert_uas_completed(callee, "bob sees the CANCEL")
    (cancel,) = callee.received("CANCEL")
    assert_hop_by_hop(cancel, in_front, sl.sip_addr)


# ------------------------------------------------------------------ behind


def behind(sl, kamailios, callee, *, record_route: bool = True):
    """Kamailio as sipledger's gateway for a fresh number prefix, relaying to
    ``callee``; returns (Kamailio, the number to dial)."""
    kam = kamailios(callee.addr, record_route=record_route)
    prefix = f"0777{next(_prefixes)}"
    name = f"kamailio-{kam.port}"
    sl.run_cli("gateway", "add", name, "--address", hop(kam.addr))
    sl.run_cli("route", "add", "--prefix", prefix, "--gateways", name)
    sl.wait_until_loaded()
    return kam, prefix + "123"


def test_behind_record_routing_call_follows_both_routes(sl, kamailios, uas_factory, sipp_dir):
    callee = uas_factory("uas_answer")
    kam, number = behind(sl, kamailios, callee)
    res = call(sl.sip_addr, sipp_dir, number)
    assert_completed(res, "alice -> sipledger -> Kamailio -> callee")
    assert_uas_completed(callee, "callee behind Kamailio")
    assert_route_set_followed(res, [sl.sip_addr, kam.addr])
    for method in ("ACK", "BYE"):
        (msg,) = callee.received(method)
        assert_through(msg, [sl.sip_addr, kam.addr])
        assert kam.received(method), f"Kamailio never saw the {method}"


def test_behind_callee_hangs_up_through_both(sl, kamailios, uas_factory, sipp_dir):
    callee = uas_factory("uas_answer_hangup", hold_ms=300)
    kam, number = behind(sl, kamailios, callee)
    res = call(sl.sip_addr, sipp_dir, number, scenario="uac_wait_bye")
    assert_completed(res, "alice waiting for the BYE of the callee behind Kamailio")
    assert_uas_completed(callee, "callee behind Kamailio hanging up")
    (bye,) = res.received("BYE")
    assert_through(bye, [kam.addr, sl.sip_addr])


def test_behind_cancel_through_both(sl, kamailios, uas_factory, sipp_dir):
    callee = uas_factory("uas_noanswer")
    kam, number = behind(sl, kamailios, callee)
    res = call(sl.sip_addr, sipp_dir, number, scenario="uac_cancel", hold_ms=300)
    assert_completed(res, "alice cancels the call to the callee behind Kamailio")
    assert_uas_completed(callee, "callee behind Kamailio sees the CANCEL")
    (cancel,) = callee.received("CANCEL")
    assert_hop_by_hop(cancel, kam, kam.addr)


@pytest.mark.parametrize("who_hangs_up", ["caller", "callee"])
def test_behind_not_record_routing_the_bye_reaches_the_callee_at_its_contact(
        sl, kamailios, uas_factory, sipp_dir, who_hangs_up):
    """Kamailio does not record-route: the dialog's route set holds sipledger
    only, so in-dialog requests go from sipledger straight to the callee's
    Contact (RFC 3261 16.12), never back to Kamailio (which answers 404)."""
    caller_bye = who_hangs_up == "caller"
    callee = uas_factory("uas_answer" if caller_bye else "uas_answer_hangup", hold_ms=300)
    kam, number = behind(sl, kamailios, callee, record_route=False)
    res = call(sl.sip_addr, sipp_dir, number, scenario="uac_call" if caller_bye else "uac_wait_bye")
    assert_completed(res, f"the {who_hangs_up} hangs up, Kamailio not record-routing")
    assert_uas_completed(callee, "callee behind a non-record-routing Kamailio")
    (ok,) = [m for m in res.received(200) if m.cseq_method == "INVITE"][-1:]
    assert [hop(sl.sip_addr) in rr for rr in ok.headers_all("Record-Route")] == [True], ok.raw
    # sipledger's in-dialog requests must not go back to Kamailio.  (SIPp as the
    # callee sends its own BYE to its transport peer, Kamailio, whatever the route
    # set says; Kamailio then loose-routes it to us, so in the callee case only
    # sipledger's ACK is ours to check.)
    ours = ("ACK", "BYE") if caller_bye else ("ACK",)
    assert all(kam.received(m) == [] for m in ours), \
        "an in-dialog request went back to the non-record-routing Kamailio\n" + kam.log_text()[-3000:]
    bye = (callee.received("BYE") if caller_bye else res.received("BYE"))
    # one BYE transaction (UDP retransmissions of it are fine)
    assert bye and len({vias(b)[0] for b in bye}) == 1, [b.raw for b in bye]
