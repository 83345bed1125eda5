"""CDRs end to end: SIPp calls through `sipledger up`, read back through the REST API.

The whole embedded pipeline runs: proxy -> sip.events -> CDR processor ->
cdr.records -> sink -> ClickHouse (chdb) -> API.
"""
from __future__ import annotations

import threading

import pytest

from proxy.contract import commands
from proxy.contract.cdr import cdr_id_for
from proxy.contract.events import new_event_id
from proxy.infra.clock import now_ms
from tests.harness.calls import (
    DOMAIN,
    MAIN_MAX_DIALOG,
    PASSWORDS,
    assert_completed,
    assert_uas_completed,
    registered,
    send_command,
)
from tests.harness.poll import eventually
from tests.harness.sipp import render_scenario, run_uac

# CDR times come from the proxy's clock and are read back through the API.  A
# year ahead, the same path runs in tests/e2e/test_prepaid.py (paid time and
# the CDR it bills) and tests/integration/test_cdr_processor.py (the fold,
# silence): this module runs once.
pytestmark = pytest.mark.e2e


@pytest.fixture
def sl(default_up):
    """The shared `up` with its admin client (tests/e2e/conftest.py)."""
    return default_up


def cdr_of(sl, res, timeout: float = 20.0) -> dict:
    """The call's CDR from the API, once the pipeline has written it."""
    invite = res.sent("INVITE")[0]
    cdr_id = cdr_id_for(invite.header("Call-ID"), invite.tag("From"))

    def written() -> dict | None:
        response = sl.client.get(f"/v1/cdrs/{cdr_id}")
        assert response.status_code in (200, 404), response.text
        return response.json() if response.status_code == 200 else None

    return eventually(written, f"the CDR {cdr_id}", timeout, interval=0.3)


def call(sl, sipp_dir, callee, scenario="uac_call", expected=None, hold_ms=1000):
    variables = {"expected": expected} if expected is not None else None
    return run_uac(scenario, sl.sip_addr, {"caller": "alice", "callee": callee, "domain": DOMAIN},
                   30, auth=("alice", PASSWORDS["alice"]), auth_uri=f"{callee}@{DOMAIN}",
                   workdir=sipp_dir, hold_ms=hold_ms, variables=variables)


def summary(cdr: dict) -> dict:
    return cdr.get("call", cdr)


def legs(cdr: dict) -> list[dict]:
    return sorted(cdr["legs_detail"], key=lambda leg: leg["leg"])


def common(sl, cdr, res):
    call_ = summary(cdr)
    invite = res.sent("INVITE")[0]
    assert call_["call_id"] == invite.header("Call-ID")
    assert call_["from_tag"] == invite.tag("From")
    assert call_["account"] == f"alice@{DOMAIN}"
    assert call_["caller_uri"] == f"sip:alice@{DOMAIN}"
    assert call_["caller_ip"] == "127.0.0.1"
    assert call_["domain"] == DOMAIN and call_["proxy"] == "sipledger-1"
    assert call_["setup_ms"] > 0 and call_["end_ms"] >= call_["setup_ms"]
    return call_


def test_answered_call(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_answer", timeout=30)
    with registered(sl, "bob", bob, sipp_dir):
        res = call(sl, sipp_dir, "bob", hold_ms=1500)
        assert_completed(res, "answered call")
    cdr = cdr_of(sl, res)
    c = common(sl, cdr, res)
    assert (c["disposition"], c["sip_code"], c["hangup_by"]) == ("answered", 200, "caller")
    assert c["dialled"] == f"sip:bob@{DOMAIN}" and c["callee_uri"] == f"sip:bob@{DOMAIN}"
    assert c["setup_ms"] <= c["ringing_ms"] <= c["answer_ms"] <= c["end_ms"]
    assert c["duration_ms"] == c["end_ms"] - c["answer_ms"] and 1400 <= c["duration_ms"] <= 5000
    assert c["billable_s"] == -(-c["duration_ms"] // 1000)
    assert c["pdd_ms"] == c["ringing_ms"] - c["setup_ms"]
    assert c["caller_user_agent"] == "sipledger-e2e-uac" and c["callee_user_agent"] == "sipledger-e2e-uas"
    (leg,) = legs(cdr)
    assert leg["target"].startswith("sip:bob@127.0.0.1") and leg["to_tag"] == c["to_tag"]


def test_busy_call(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_busy", timeout=30)
    with registered(sl, "bob", bob, sipp_dir):
        res = call(sl, sipp_dir, "bob", scenario="uac_call_expect_failure", expected=486)
        assert_completed(res, "busy call")
    c = common(sl, cdr := cdr_of(sl, res), res)
    assert (c["disposition"], c["sip_code"], c["answer_ms"], c["duration_ms"], c["billable_s"]) == \
        ("busy", 486, 0, 0, 0)
    assert legs(cdr)[0]["sip_code"] == 486


def test_cancelled_call(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_noanswer", timeout=30)
    with registered(sl, "bob", bob, sipp_dir):
        res = call(sl, sipp_dir, "bob", scenario="uac_cancel", hold_ms=500)
        assert_completed(res, "cancelled call")
    c = common(sl, cdr_of(sl, res), res)
    assert (c["disposition"], c["sip_code"], c["answer_ms"]) == ("cancelled", 487, 0)
    assert c["ringing_ms"] > 0


def test_forwarded_on_busy_has_two_legs(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_busy", timeout=30)
    carol = uas_factory("uas_answer", timeout=30)
    sl.run_cli("forward", "set", f"bob@{DOMAIN}", "--busy", f"carol@{DOMAIN}")
    sl.wait_until_loaded()
    try:
        with registered(sl, "bob", bob, sipp_dir), registered(sl, "carol", carol, sipp_dir):
            res = call(sl, sipp_dir, "bob")
            assert_completed(res, "busy then forwarded")
    finally:
        sl.run_cli("forward", "clear", f"bob@{DOMAIN}")
        sl.wait_until_loaded()
    cdr = cdr_of(sl, res)
    c = common(sl, cdr, res)
    assert c["disposition"] == "answered" and c["legs"] == 2
    first, second = legs(cdr)
    assert (first["sip_code"], first["parent_leg"]) == (486, -1)
    assert (second["leg_cause"], second["parent_leg"], second["sip_code"]) == ("forward", 0, 200)
    assert second["target"].startswith("sip:carol@")


def test_failed_over_gateway(sl, uas_factory, sipp_dir):
    broken = uas_factory(str(render_scenario("uas_reject", sipp_dir, code=503, reason="Service Unavailable")),
                         timeout=30)
    backup = uas_factory("uas_answer", timeout=30)
    sl.run_cli("gateway", "add", "cdr-broken", "--address", f"127.0.0.1:{broken.port}")
    sl.run_cli("gateway", "add", "cdr-backup", "--address", f"127.0.0.1:{backup.port}")
    sl.run_cli("route", "add", "--prefix", "06", "--gateways", "cdr-broken,cdr-backup")
    sl.wait_until_loaded()
    res = call(sl, sipp_dir, "0612345")
    assert_completed(res, "gateway failover")
    cdr = cdr_of(sl, res)
    first, second = legs(cdr)
    assert (first["gateway"], first["sip_code"]) == ("cdr-broken", 503)
    assert (second["gateway"], second["leg_cause"], second["sip_code"]) == ("cdr-backup", "failover", 200)
    assert summary(cdr)["disposition"] == "answered"


def call_waiting_for_bye(sl, bob, sipp_dir, box: dict):
    """alice calls bob (SIPp ``uac_wait_bye``, in a thread: its result lands in
    ``box["res"]``) and waits for a BYE from the proxy; returns (thread, INVITE)
    once bob has the ACK."""
    thread = threading.Thread(target=lambda: box.update(res=run_uac(
        "uac_wait_bye", sl.sip_addr, {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 30,
        auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}", workdir=sipp_dir)))
    thread.start()
    (invite,) = bob.wait_for("INVITE", 10)
    bob.wait_for("ACK", 10)
    return thread, invite


def test_dialog_timeout_closes_the_cdr(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_bye_from_proxy", timeout=30)
    box: dict = {}
    with registered(sl, "bob", bob, sipp_dir):
        thread, invite = call_waiting_for_bye(sl, bob, sipp_dir, box)
        send_command(sl.kafka_bootstrap, commands.SetMaxDuration(
            id=new_event_id(), ts_ms=now_ms(), call_id=invite.header("Call-ID"), seconds=1))
        thread.join(30)
        assert_completed(box["res"], "call cut at its maximum duration")
        assert_uas_completed(bob, "bob hung up by the proxy")
    c = summary(cdr_of(sl, box["res"]))
    assert (c["disposition"], c["hangup_by"]) == ("answered", "timeout")
    assert c["duration_ms"] >= 1000



def listed(sl, call_id: str, state: str | None) -> dict | bool:
    """The call as ``GET /v1/calls`` lists it, if in ``state``; with None: whether it is gone."""
    items = sl.client.get("/v1/calls").json()["items"]
    mine = [c for c in items if c["call_id"] == call_id]
    return (mine[0] if mine and mine[0]["state"] == state else False) if state else not mine


def test_live_call_is_listed_then_hung_up_by_the_operator(sl, uas_factory, sipp_dir):
    """`GET /v1/calls` lists the answered call with its facts; `sipledger hangup`
    (the service behind `DELETE /v1/calls/{id}`) ends it with BYE both ways; it
    leaves the list and its CDR says teardown."""
    bob = uas_factory("uas_bye_from_proxy", timeout=30)
    box: dict = {}
    with registered(sl, "bob", bob, sipp_dir):
        thread, invite = call_waiting_for_bye(sl, bob, sipp_dir, box)
        call_id = invite.header("Call-ID")

        live = eventually(lambda: listed(sl, call_id, "confirmed"), "the call in /v1/calls", 10, interval=0.2)
        assert (live["caller"], live["callee"], live["account"], live["gateway"], live["worker"]) == \
            (f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}", f"alice@{DOMAIN}", "", 0)
        assert 0 < live["started_ms"] <= live["answered_ms"] and live["duration_ms"] >= 0
        assert live["max_duration_s"] == MAIN_MAX_DIALOG
        out = sl.run_cli("hangup", call_id, "--reason", "operator test").stdout
        assert "teardown sent" in out
        thread.join(30)
        assert_completed(box["res"], "alice is hung up by the operator")
        bob_res = assert_uas_completed(bob, "bob is hung up by the operator")
    for bye in (box["res"].received("BYE")[0], bob_res.received("BYE")[0]):
        assert 'text="operator test"' in (bye.header("Reason") or ""), bye
    eventually(lambda: listed(sl, call_id, None), "the call gone from /v1/calls", 10, interval=0.2)
    c = summary(cdr_of(sl, box["res"]))
    assert (c["disposition"], c["hangup_by"], c["hangup_reason"]) == ("answered", "teardown", "operator test")


def test_ringing_call_hung_up_through_the_api_is_cancelled(sl, uas_factory, sipp_dir):
    """``DELETE /v1/calls/{id}`` on a call still ringing: listed as early, then
    the proxy CANCELs it toward the callee and the caller gets 487."""
    bob = uas_factory("uas_noanswer", timeout=30)
    box: dict = {}
    with registered(sl, "bob", bob, sipp_dir):
        thread = threading.Thread(target=lambda: box.update(res=call(
            sl, sipp_dir, "bob", scenario="uac_call_expect_failure", expected=487)))
        thread.start()
        (invite,) = bob.wait_for("INVITE", 10)
        call_id = invite.header("Call-ID")
        ringing = eventually(lambda: listed(sl, call_id, "early"), "the ringing call in /v1/calls", 10,
                             interval=0.2)
        assert ringing["answered_ms"] == 0 and ringing["duration_ms"] == 0
        response = sl.client.delete(f"/v1/calls/{call_id}", params={"reason": "operator test"})
        assert response.status_code == 202, response.text
        assert response.json()["call"]["call_id"] == call_id and response.json()["command_id"]
        thread.join(30)
        assert_completed(box["res"], "alice's ringing call is cancelled by the operator")
        assert_uas_completed(bob, "bob's ringing stops")
    eventually(lambda: listed(sl, call_id, None), "the call gone from /v1/calls", 10, interval=0.2)
    c = summary(cdr_of(sl, box["res"]))
    assert (c["disposition"], c["answer_ms"], c["hangup_by"]) == ("cancelled", 0, "teardown"), c


def test_zz_cdrs_rebuilt_from_the_archive_are_identical(sl):
    """Last in the module (it restarts the shared `up`): the module's mix
    (answered, busy, cancelled, forwarded, failed over, timed out, hung up) is in
    the archive; a dry-run rebuild through the API finds every CDR unchanged;
    then, `up` stopped, the CDR tables are emptied and `sipledger cdr rebuild`
    brings back the very same legs (docs/operations.md)."""
    from cdr.store.queries import CdrStore
    from proxy.infra.clickhouse.backend import ChdbBackend

    span = {"from": 0, "to": now_ms() + 86_400_000}
    items = sl.client.get("/v1/cdrs", params={"limit": 1000}).json()["items"]
    assert len(items) >= 8
    before = {item["cdr_id"]: legs(sl.client.get(f"/v1/cdrs/{item['cdr_id']}").json()) for item in items}

    def archived_all() -> dict | None:      # the archiver is a consumer: it may lag a moment
        report = sl.client.post("/v1/cdrs/rebuild", json={**span, "dry_run": True}).json()
        return report if report["unchanged"] == len(before) else None

    report = eventually(archived_all, "every CDR unchanged by a dry-run rebuild", 20, interval=0.5)
    assert (report["added"], report["changed"], report["removed"], report["legs_written"]) == (0, 0, 0, 0), report
    sl.stop()
    try:
        backend = ChdbBackend(sl.data_dir / "clickhouse")
        try:
            backend.execute("TRUNCATE TABLE cdr")
            backend.execute("TRUNCATE TABLE cdr_calls")
        finally:
            backend.close()
        out = sl.run_cli("cdr", "rebuild", "--from", "0", "--to", str(span["to"])).stdout
        assert f"{len(before)} added, 0 changed" in out, out
        backend = ChdbBackend(sl.data_dir / "clickhouse")
        try:
            store = CdrStore(backend)
            after = {cdr_id: legs(store.get_call(cdr_id)) for cdr_id in before}
        finally:
            backend.close()
        assert after == before
    finally:                    # the next modules share this `up`
        sl.start(timeout=60)
        sl.admin_client()
