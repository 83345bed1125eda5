"""End to end: dialog correctness with real SIPp phones through `sipledger up`.

* A forked call answered by both of bob's phones: the caller ACKs both and
  hangs up the second dialog; the first stays up, its CDR stays open and the
  maximum duration still ends it (the proxy's BYE both ways).
* A callee whose 2xx Contact points elsewhere than where the INVITE went: the
  caller's ACK and BYE go to that Contact (RFC 3261 §16.6 / §16.12).
"""
from __future__ import annotations

import msgspec
import pytest

from proxy.contract import callfold
from proxy.contract import events as ev
from tests.harness.calls import DOMAIN, PASSWORDS, SHORT_MAX_DIALOG, assert_completed, assert_uas_completed, registered
from tests.harness.proxy import event_types, read_events, wait_for_types
from tests.harness.sipp import run_uac

pytestmark = pytest.mark.e2e

MAX_DIALOG = SHORT_MAX_DIALOG


@pytest.fixture
def sipledger(short_dialogs_up):
    """The shared short-dialog `up` (tests/e2e/conftest.py)."""
    return short_dialogs_up


def alice_calls_bob(sl, scenario: str, sipp_dir, timeout: float = 20):
    return run_uac(scenario, sl.sip_addr, {"caller": "alice", "callee": "bob", "domain": DOMAIN}, timeout,
                   auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}", workdir=sipp_dir)


def test_bye_of_the_second_answer_leaves_the_first_dialog_billed_and_capped(sipledger, uas_factory, sipp_dir):
    first = uas_factory("uas_bye_from_proxy", timeout=30)
    second = uas_factory("uas_answer_late", timeout=30)
    with registered(sipledger, "bob", first, sipp_dir), registered(sipledger, "bob", second, sipp_dir):
        res = alice_calls_bob(sipledger, "uac_fork_bye_second", sipp_dir)
        assert_completed(res, "alice ACKs both answers, hangs up the second, waits for the proxy's BYE")
        first_res = assert_uas_completed(first, "the first phone is ended by the proxy's BYE")
        second_res = assert_uas_completed(second, "the second phone gets alice's BYE")

    oks = [m for m in res.received(200) if m.cseq_method == "INVITE"]
    first_tag, second_tag = oks[0].tag("To"), oks[-1].tag("To")
    assert first_tag != second_tag, "both answers reached the caller (RFC 3261 §16.7 step 5)"
    (alice_bye,) = res.sent("BYE")
    assert alice_bye.tag("To") == second_tag
    assert second_res.received("BYE")[0].tag("To") == second_tag
    (proxy_bye,) = first_res.received("BYE")            # the cap ended the first dialog
    assert proxy_bye.tag("To") == first_tag

    call_id = res.sent("INVITE")[-1].header("Call-ID")
    events = read_events(sipledger.kafka_bootstrap, "sip.events", call_id=call_id, timeout=10,
                         until=wait_for_types("call.answered", "dialog.timeout"), settle=0.5)
    types = event_types(events)
    assert types.count("call.answered") == 1 and "dialog.timeout" in types, types
    assert all(e["by"] == "proxy" for e in events if e["type"] == "call.bye"), types
    state = callfold.fold(ev.decode(msgspec.json.encode(e)) for e in events)
    (row,) = [r for r in callfold.finish(state, 0) if r.disposition == "answered"]
    assert row.to_tag == first_tag and row.hangup_by == "timeout"
    assert row.duration_ms >= MAX_DIALOG * 1000 - 100      # not closed early by the extra BYE


def test_ack_and_bye_go_to_the_callees_contact_not_where_the_invite_went(sipledger, uas_factory, sipp_dir):
    elsewhere = uas_factory("uas_dialog_elsewhere", timeout=30)
    answering = uas_factory("uas_contact_elsewhere", keys={"contact_port": elsewhere.port}, timeout=30)
    with registered(sipledger, "bob", answering, sipp_dir):
        res = run_uac("uac_call", sipledger.sip_addr, {"caller": "alice", "callee": "bob", "domain": DOMAIN},
                      20, auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}", workdir=sipp_dir,
                      hold_ms=200)
        assert_completed(res, "alice's call, hung up by alice")
        dialog = assert_uas_completed(elsewhere, "the Contact gets the BYE")
    (bye,) = dialog.received("BYE")
    assert bye.request_uri == f"sip:bob@127.0.0.1:{elsewhere.port};transport=UDP"
    assert answering.received("BYE") == [] and answering.received("ACK") == []
