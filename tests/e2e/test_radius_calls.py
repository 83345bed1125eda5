"""End to end: SIPp calls through `sipledger up`, the RADIUS worker (started
here, on the same broker: the bootstrap comes from `up`'s READY line) and a
private FreeRADIUS whose detail file is read back.

alice calls bob (a SIPp UAS registered through the proxy): an answered call
must reach FreeRADIUS as one Start and one Stop whose Acct-Session-Time is
within one second of the call's duration (answer -> BYE, from its events);
a busy call as one Failed (send_failed on)."""
from __future__ import annotations

import uuid

import pytest

from tests.harness.calls import DOMAIN, PASSWORDS, assert_completed, assert_uas_completed, registered
from tests.harness.freeradius import FreeRadius, RadiusWorkerProcess, by_session, freeradius_available, radius_config
from tests.harness.proxy import read_events, wait_for_types
from tests.harness.sipp import run_uac

# The worker's record times and timers on a shifted clock are covered by
# tests/integration/test_radius_worker.py (marked clock); this module proves
# the path from `up` and is not run a second time.
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not freeradius_available(), reason="freeradius is not installed")]

WAIT = 30.0


@pytest.fixture(scope="module")
def sipledger(default_up):
    """The shared `up` (tests/e2e/conftest.py)."""
    return default_up


@pytest.fixture(scope="module")
def freeradius(tmp_path_factory):
    fr = FreeRadius(tmp_path_factory.mktemp("freeradius")).start()
    yield fr
    fr.stop()


@pytest.fixture(scope="module")
def radius_worker(sipledger, freeradius, tmp_path_factory):
    """The worker with its own config file (not `up`'s: `up` must not start a second one)."""
    work = tmp_path_factory.mktemp("radius-worker")
    config = work / "radius.toml"
    config.write_text(radius_config([freeradius], send_failed=True,
                                    group_id=f"sipledger-radius-e2e-{uuid.uuid4().hex[:6]}"))
    worker = RadiusWorkerProcess(work / "data", config, sipledger.kafka_bootstrap).start()
    yield worker
    worker.stop()


def _call(sipledger, sipp_dir, scenario: str, **kw):
    return run_uac(scenario, sipledger.sip_addr, {"caller": "alice", "callee": "bob", "domain": DOMAIN},
                   15, auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}",
                   workdir=sipp_dir, **kw)


def _call_id_and_tag(res):
    invite = res.sent("INVITE")[-1]
    return invite.header("Call-ID"), invite.tag("From")


def test_answered_call_start_and_stop(sipledger, freeradius, radius_worker, uas_factory, sipp_dir):
    uas = uas_factory("uas_answer")
    with registered(sipledger, "bob", uas, sipp_dir):
        res = _call(sipledger, sipp_dir, "uac_call", hold_ms=1500)
        assert_completed(res, "alice -> bob")
        assert_uas_completed(uas, "bob")
    call_id, from_tag = _call_id_and_tag(res)
    to_tag = [m for m in res.received(200) if m.cseq_method == "INVITE"][0].tag("To")

    events = read_events(sipledger.kafka_bootstrap, "sip.events", call_id=call_id, timeout=10,
                         until=wait_for_types("call.answered", "call.bye"))
    answered = next(e for e in events if e["type"] == "call.answered")
    bye = next(e for e in events if e["type"] == "call.bye")
    duration_ms = bye["ts_ms"] - answered["ts_ms"]

    session = f"{call_id};leg=0"
    records = freeradius.wait_for(
        lambda rs: {r.status for r in by_session(rs).get(session, [])} >= {"Start", "Stop"}, WAIT)
    recs = by_session(records).get(session, [])
    assert [r.status for r in recs] == ["Start", "Stop"], \
        f"{[r.status for r in recs]}\nworker stderr:\n{radius_worker.stderr()[-3000:]}"
    start, stop = recs
    for r in (start, stop):
        assert r.get("Acct-Multi-Session-Id") == call_id
        assert r.get("User-Name") == f"alice@{DOMAIN}"
        assert r.get("Calling-Station-Id") == f"sip:alice@{DOMAIN}"
        assert r.get("Called-Station-Id") == f"sip:bob@{DOMAIN}"
        assert (r.get("Sip-From-Tag"), r.get("Sip-To-Tag")) == (from_tag, to_tag)
        assert r.int("Sip-Response-Code") == 200
        assert r.get("Cisco-AVPair") == f"call-id={call_id}"
    assert start.time("Event-Timestamp") == answered["ts_ms"] // 1000
    assert stop.time("Event-Timestamp") == bye["ts_ms"] // 1000
    assert abs(stop.int("Acct-Session-Time") - duration_ms / 1000) <= 1.0, (stop.int("Acct-Session-Time"),
                                                                           duration_ms)
    assert stop.int("Sip-Call-MSDuration") == duration_ms
    assert stop.get("Acct-Terminate-Cause") == "User-Request"       # the caller's BYE
    assert stop.get("h323-disconnect-cause") == "h323-disconnect-cause=10"


def test_busy_call_is_one_failed_record(sipledger, freeradius, radius_worker, uas_factory, sipp_dir):
    uas = uas_factory("uas_busy")
    with registered(sipledger, "bob", uas, sipp_dir):
        res = _call(sipledger, sipp_dir, "uac_call_expect_failure", variables={"expected": 486})
        assert_completed(res, "alice gets 486")
        assert_uas_completed(uas, "bob busy")
    call_id, from_tag = _call_id_and_tag(res)
    session = f"{call_id};leg=0"
    records = freeradius.wait_for(lambda rs: session in by_session(rs), WAIT)
    recs = by_session(records).get(session, [])
    assert [r.status for r in recs] == ["Failed"], \
        f"{[r.status for r in recs]}\nworker stderr:\n{radius_worker.stderr()[-3000:]}"
    (failed,) = recs
    assert failed.int("Sip-Response-Code") == 486 and failed.get("Sip-From-Tag") == from_tag
    assert failed.get("h323-disconnect-cause") == "h323-disconnect-cause=11"
