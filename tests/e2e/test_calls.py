"""End to end: SIPp callers and callees through `sipledger up`, and the call
events read back from `sip.events`.

alice (caller, digest-authenticated) calls bob (a SIPp UAS registered through
the proxy with digest auth).  Each test checks the SIP exchange on both sides
and the events of its call field by field (proxy/contract/events.py).
"""
from __future__ import annotations

import time

import pytest

from tests.harness.calls import DOMAIN, PASSWORDS, SHORT_MAX_DIALOG, assert_completed, assert_uas_completed, registered
from tests.harness.proxy import event_types, read_events, wait_for_types
from tests.harness.sipp import SipMessage, SippResult, register, run_uac

pytestmark = pytest.mark.e2e

# ------------------------------------------------------------------ test setup

@pytest.fixture
def sipledger(default_up):
    """The shared `up` (tests/e2e/conftest.py; max_dialog_seconds = 3600)."""
    return default_up


@pytest.fixture
def call_as(sipledger, sipp_dir):
    """run_uac with alice's (or another user's) credentials and the right digest uri."""
    def call(scenario: str, callee: str, *, caller: str = "alice", password: str | None = None,
             timeout: float = 15, **kw):
        return run_uac(scenario, sipledger.sip_addr,
                       {"caller": caller, "callee": callee, "domain": DOMAIN}, timeout,
                       auth=(caller, password if password is not None else PASSWORDS[caller]),
                       auth_uri=f"{callee}@{DOMAIN}", workdir=sipp_dir, **kw)
    return call


# --------------------------------------------------------------------------- helpers

ALICE = f"alice@{DOMAIN}"
UAC_UA = "sipledger-e2e-uac"
UAS_UA = "sipledger-e2e-uas"
EVENT_TIMEOUT = 10.0
SETTLE = 0.5          # keep reading this long after the expected events, to catch extras


def _final_invite(res: SippResult) -> SipMessage:
    """The authenticated INVITE the caller sent (the second one)."""
    invites = res.sent("INVITE")
    assert len(invites) >= 2, "caller sent no authenticated INVITE\n" + res.describe()
    inv = invites[-1]
    assert inv.header("Proxy-Authorization"), "second INVITE lacks credentials"
    return inv


def _call_ids(res: SippResult) -> tuple[str, str, SipMessage]:
    inv = _final_invite(res)
    return inv.header("Call-ID"), inv.tag("From"), inv


def _top_branch(msg: SipMessage) -> str:
    via = msg.headers_all("Via")[0]
    for param in via.split(";")[1:]:
        k, _, v = param.strip().partition("=")
        if k.lower() == "branch":
            return v
    raise AssertionError(f"no branch in {via!r}")


def _events(sl, call_id: str, *expected_types: str, timeout: float = EVENT_TIMEOUT) -> list[dict]:
    return read_events(sl.kafka_bootstrap, "sip.events", call_id=call_id, timeout=timeout,
                       until=wait_for_types(*expected_types), settle=SETTLE)


def _check_common(events: list[dict], call_id: str, from_tag: str) -> None:
    """What holds for every event of one call."""
    assert events, f"no events for Call-ID {call_id}"
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids), f"event ids not unique: {ids}"
    last_ts = None
    for e in events:
        assert e["v"] == 1, e
        assert e["call_id"] == call_id, e
        assert e["from_tag"] == from_tag, e
        assert isinstance(e["id"], str) and e["id"], e
        assert isinstance(e["proxy"], str) and e["proxy"], e
        assert isinstance(e["ts_ms"], int) and e["ts_ms"] > 1_600_000_000_000, e
        if last_ts is not None:
            assert e["ts_ms"] >= last_ts, f"ts_ms went backwards: {event_types(events)}"
        last_ts = e["ts_ms"]
        if e.get("_key") is not None:
            assert e["_key"] == call_id, "Kafka key must be the Call-ID"


def _check_invite_received(ev: dict, inv: SipMessage, callee: str, transport: str = "udp",
                           source_port: int | None = None) -> None:
    assert ev["type"] == "invite.received"
    assert ev.get("to_tag") is None
    assert ev["branch"] == _top_branch(inv)
    assert ev["cseq"] == int(inv.header("CSeq").split()[0])
    assert ev["caller"]["account"] == ALICE
    assert ev["caller"]["from_uri"] == f"sip:{ALICE}"
    assert ev["caller"].get("display_name") in ("alice", None)
    assert ev["callee"]["request_uri"] == f"sip:{callee}@{DOMAIN}"
    assert ev["callee"]["to_uri"] == f"sip:{callee}@{DOMAIN}"
    assert ev["source"]["ip"] == "127.0.0.1"
    assert ev["source"]["transport"] == transport
    if source_port is not None:
        assert ev["source"]["port"] == source_port
    assert ev["user_agent"] == UAC_UA


def _uac_port(res: SippResult) -> int:
    return int(res.cmd[res.cmd.index("-p") + 1])


def _assert_refused_unauthenticated(sl, call_id: str) -> list[dict]:
    """A call refused for its credentials: nothing routed or billed to anyone.
    The proxy may report the attempt (invite.received without an account,
    then call.failed 403 by the proxy) or say nothing at all."""
    events = read_events(sl.kafka_bootstrap, "sip.events", call_id=call_id, timeout=3.0)
    types = event_types(events)
    assert types in ([], ["call.failed"], ["invite.received", "call.failed"]), types
    for e in events:
        if e["type"] == "invite.received":
            assert e["caller"].get("account") is None, \
                f"a refused INVITE was attributed to {e['caller'].get('account')}"
        if e["type"] == "call.failed":
            assert (e["code"], e["by_proxy"]) == (403, True), e
    return events


# ---------------------------------------------------------------------- registration

def test_register_digest_auth(sipledger, uas_factory, sipp_dir):
    uas = uas_factory("uas_answer")
    res = register(sipledger.sip_addr, "bob", DOMAIN, PASSWORDS["bob"], uas.contact_host, 300,
                   workdir=sipp_dir)
    try:
        assert_completed(res, "REGISTER")
        (challenge,) = res.received(401)
        www = challenge.header("WWW-Authenticate")
        assert www and www.lower().startswith("digest"), www
        assert 'realm="' in www and "qop" in www and "auth" in www, www
        assert "sha-256" not in www.lower(), "SIPp only answers MD5 challenges"
        (ok,) = res.received(200)
        contacts = ok.headers_all("Contact")
        assert any(uas.contact_host in c for c in contacts), f"binding not echoed: {contacts}"
        assert ok.tag("To"), "final response to REGISTER has no To tag"
    finally:
        unreg = register(sipledger.sip_addr, "bob", DOMAIN, PASSWORDS["bob"], uas.contact_host, 0,
                         workdir=sipp_dir)
    assert_completed(unreg, "un-REGISTER")


def test_register_wrong_password_is_403_and_binds_nothing(sipledger, uas_factory, sipp_dir, call_as):
    uas = uas_factory("uas_answer", timeout=10)
    res = run_uac("register_wrong_password", sipledger.sip_addr,
                  {"user": "bob", "domain": DOMAIN, "contact_host": uas.contact_host, "expires": 300},
                  10, auth=("bob", "not-the-password"), auth_uri=DOMAIN, workdir=sipp_dir)
    assert_completed(res, "REGISTER with a wrong password")
    assert [m.status for m in res.received() if m.status != 100] == [401, 403]
    # nothing was bound: bob is provisioned but not reachable
    call = call_as("uac_call_expect_failure", "bob", variables={"expected": 480})
    assert_completed(call, "call to bob after the refused REGISTER")
    assert uas.received("INVITE") == []


# ---------------------------------------------------------------------- calls

@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_answered_call(sipledger, uas_factory, sipp_dir, call_as, transport):
    uas = uas_factory("uas_answer")
    with registered(sipledger, "bob", uas, sipp_dir):
        res = call_as("uac_call", "bob", hold_ms=300, transport=transport)
        assert_completed(res, "alice -> bob")
        uas_res = assert_uas_completed(uas, "bob")

    call_id, from_tag, inv = _call_ids(res)
    port = sipledger.sip_addr[1]

    # --- caller side: 407, then 200 with a Record-Route of the proxy
    (chal,) = res.received(407)
    pa = chal.header("Proxy-Authenticate")
    assert pa and pa.lower().startswith("digest") and "qop" in pa, pa
    ok = [m for m in res.received(200) if m.cseq_method == "INVITE"]
    assert len(ok) == 1, res.describe()
    rr = ok[0].headers_all("Record-Route")
    assert rr and f"127.0.0.1:{port}" in rr[0] and ";lr" in rr[0], rr
    to_tag = ok[0].tag("To")
    assert to_tag
    # the caller's ACK and BYE followed the route set
    for method in ("ACK", "BYE"):
        sent = [m for m in res.sent(method) if m.cseq_method == method]
        assert sent and sent[-1].headers_all("Route"), f"{method} without Route\n{res.describe()}"

    # --- callee side: what the proxy forwarded
    (in_inv,) = uas_res.received("INVITE")
    assert in_inv.request_uri.startswith("sip:bob@127.0.0.1:") and str(uas.port) in in_inv.request_uri
    assert in_inv.header("Call-ID") == call_id
    assert in_inv.tag("From") == from_tag
    vias = in_inv.headers_all("Via")
    assert len(vias) == 2 and f"127.0.0.1:{port}" in vias[0], vias
    assert _top_branch(inv) in vias[1]
    assert int(in_inv.header("Max-Forwards")) == 69
    in_rr = in_inv.headers_all("Record-Route")
    assert in_rr and f"127.0.0.1:{port}" in in_rr[0], in_rr
    (in_ack,) = uas_res.received("ACK")
    (in_bye,) = uas_res.received("BYE")
    for m in (in_ack, in_bye):
        assert m.header("Call-ID") == call_id
        assert m.headers_all("Route") == [], f"proxy left its own Route in the {m.method}"
        assert f"127.0.0.1:{port}" in m.headers_all("Via")[0]

    # --- events
    types = ["invite.received", "invite.routed", "call.progress", "call.answered",
             "call.ack", "call.bye"]
    events = _events(sipledger, call_id, *types)
    assert event_types(events) == types
    _check_common(events, call_id, from_tag)
    rcv, routed, progress, answered, ack, bye = events
    _check_invite_received(rcv, inv, "bob", transport,
                           _uac_port(res) if transport == "udp" else None)
    assert routed.get("to_tag") is None
    assert routed["leg"]["index"] == 0
    assert routed["leg"].get("parent") is None
    assert routed["leg"].get("cause", "initial") == "initial"
    assert routed["leg"]["branch"] == _top_branch(in_inv)
    destination = routed["leg"].get("destination")
    assert destination is None or f"127.0.0.1:{uas.port}" in destination, destination
    assert routed["callee"]["request_uri"] == f"sip:bob@{DOMAIN}"
    assert f"127.0.0.1:{uas.port}" in (routed["callee"].get("target") or ""), routed
    for e in (progress, answered, ack, bye):
        assert e["to_tag"] == to_tag, e
    assert (progress["leg"], progress["code"], progress["reason"]) == (0, 180, "Ringing")
    assert (answered["leg"], answered["code"], answered["reason"]) == (0, 200, "OK")
    assert answered["callee_user_agent"] == UAS_UA
    assert answered["max_duration_s"] == 3600
    assert ack.get("leg") in (0, None)
    assert bye["by"] == "caller"
    assert bye.get("leg") in (0, None)


def test_callee_hangs_up(sipledger, uas_factory, sipp_dir, call_as):
    uas = uas_factory("uas_answer_hangup", hold_ms=300)
    with registered(sipledger, "bob", uas, sipp_dir):
        res = call_as("uac_wait_bye", "bob")
        assert_completed(res, "alice waits for bob's BYE")
        uas_res = assert_uas_completed(uas, "bob hangs up")

    call_id, from_tag, _ = _call_ids(res)
    (bye_in,) = res.received("BYE")
    assert bye_in.tag("To") == from_tag
    assert bye_in.headers_all("Route") == []
    assert uas_res.sent("BYE")[0].headers_all("Route"), "callee BYE did not use the route set"

    types = ["invite.received", "invite.routed", "call.progress", "call.answered",
             "call.ack", "call.bye"]
    events = _events(sipledger, call_id, *types)
    assert event_types(events) == types
    _check_common(events, call_id, from_tag)
    assert events[-1]["by"] == "callee"
    assert events[-1]["to_tag"] == bye_in.tag("From")


def test_busy(sipledger, uas_factory, sipp_dir, call_as):
    uas = uas_factory("uas_busy")
    with registered(sipledger, "bob", uas, sipp_dir):
        res = call_as("uac_call_expect_failure", "bob", variables={"expected": 486})
        assert_completed(res, "alice gets 486")
        uas_res = assert_uas_completed(uas, "bob busy")

    call_id, from_tag, inv = _call_ids(res)
    finals = [m for m in res.received() if m.status and m.status >= 200 and m.cseq_method == "INVITE"]
    assert [m.status for m in finals] == [407, 486]
    assert uas_res.received("ACK"), "proxy did not ACK the 486"

    types = ["invite.received", "invite.routed", "leg.failed", "call.failed"]
    events = _events(sipledger, call_id, *types)
    assert event_types(events) == types
    _check_common(events, call_id, from_tag)
    rcv, routed, leg_failed, failed = events
    _check_invite_received(rcv, inv, "bob", "udp", _uac_port(res))
    assert routed["leg"]["index"] == 0
    assert (leg_failed["leg"], leg_failed["code"]) == (0, 486)
    assert leg_failed["reason"] == "Busy Here"
    assert (failed["code"], failed["reason"]) == (486, "Busy Here")
    assert failed.get("by_proxy", False) is False
    assert failed["to_tag"] == finals[-1].tag("To")


def test_no_answer_then_cancel(sipledger, uas_factory, sipp_dir, call_as):
    uas = uas_factory("uas_noanswer")
    with registered(sipledger, "bob", uas, sipp_dir):
        res = call_as("uac_cancel", "bob", hold_ms=300)
        assert_completed(res, "alice cancels")
        uas_res = assert_uas_completed(uas, "bob rings")

    call_id, from_tag, inv = _call_ids(res)
    assert res.received(487) and [m for m in res.received(200) if m.cseq_method == "CANCEL"]
    (cancel_in,) = uas_res.received("CANCEL")
    assert cancel_in.header("Call-ID") == call_id
    assert uas_res.received("ACK"), "proxy did not ACK the callee's 487"

    events = _events(sipledger, call_id, "invite.received", "invite.routed", "call.progress",
                     "call.cancel", "call.failed")
    types = event_types(events)
    # the proxy may or may not report the cancelled branch as a failed leg
    assert types in (
        ["invite.received", "invite.routed", "call.progress", "call.cancel", "call.failed"],
        ["invite.received", "invite.routed", "call.progress", "call.cancel", "leg.failed",
         "call.failed"],
    ), types
    _check_common(events, call_id, from_tag)
    _check_invite_received(events[0], inv, "bob", "udp", _uac_port(res))
    assert (events[2]["code"], events[2]["leg"]) == (180, 0)
    if "leg.failed" in types:
        lf = events[types.index("leg.failed")]
        assert (lf["leg"], lf["code"]) == (0, 487)
    failed = events[-1]
    assert failed["code"] == 487
    assert failed.get("by_proxy", False) is False


def _rejected_by_proxy(sl, res: SippResult, code: int) -> None:
    call_id, from_tag, inv = _call_ids(res)
    events = _events(sl, call_id, "call.failed")
    types = event_types(events)
    assert types in (["call.failed"], ["invite.received", "call.failed"]), types
    _check_common(events, call_id, from_tag)
    if types[0] == "invite.received":
        _check_invite_received(events[0], inv, inv.request_uri.split(":")[1].split("@")[0],
                               "udp", _uac_port(res))
    failed = events[-1]
    assert failed["code"] == code
    assert failed["by_proxy"] is True
    (final,) = [m for m in res.received(code)]
    assert failed.get("to_tag") in (None, final.tag("To"))


def test_unknown_user_404(sipledger, call_as):
    res = call_as("uac_call_expect_failure", "nobody", variables={"expected": 404})
    assert_completed(res, "call to an unknown user")
    _rejected_by_proxy(sipledger, res, 404)


def test_registered_nobody_480(sipledger, call_as):
    res = call_as("uac_call_expect_failure", "carol", variables={"expected": 480})
    assert_completed(res, "call to a provisioned user with no binding")
    _rejected_by_proxy(sipledger, res, 480)


def test_wrong_password_403(sipledger, uas_factory, sipp_dir, call_as):
    uas = uas_factory("uas_answer", timeout=10)
    with registered(sipledger, "bob", uas, sipp_dir):
        res = call_as("uac_wrong_password", "bob", password="not-alices-password")
        assert_completed(res, "alice with a wrong password")
        assert uas.received("INVITE") == [], "an unauthenticated INVITE reached the callee"
    call_id, _, _ = _call_ids(res)
    _assert_refused_unauthenticated(sipledger, call_id)


def test_from_must_match_auth_user(sipledger, uas_factory, sipp_dir):
    """alice's credentials on a call whose From is bob: 403, nothing routed."""
    uas = uas_factory("uas_answer", timeout=10)
    with registered(sipledger, "bob", uas, sipp_dir):
        res = run_uac("uac_wrong_password", sipledger.sip_addr,
                      {"caller": "carol", "callee": "bob", "domain": DOMAIN}, 15,
                      auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}",
                      workdir=sipp_dir)
        assert_completed(res, "From carol with alice's credentials")
        assert uas.received("INVITE") == []
    call_id, _, _ = _call_ids(res)
    _assert_refused_unauthenticated(sipledger, call_id)


# --------------------------------------------------------------------------- metrics

def _scrape(sl) -> dict[tuple[str, tuple], float]:
    """/metrics from loopback (no token), parsed by prometheus-client's own parser."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    reply = httpx.get(f"{sl.api_url}/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def test_metrics_count_the_calls(sipledger, uas_factory, sipp_dir, call_as):
    """A SIPp mix (2 answered, 1 busy) read back from /metrics of every process:
    the proxy worker's SIP figures, the CDR processor's CDRs, and `sipledger stats`."""
    before = _scrape(sipledger)
    uas = uas_factory("uas_answer", calls=2)
    with registered(sipledger, "bob", uas, sipp_dir):
        res = call_as("uac_call", "bob", hold_ms=100, calls=2)
        assert res.returncode == 0 and res.successful == 2, res.describe()
        uas.wait(10)
    busy = uas_factory("uas_busy")
    with registered(sipledger, "bob", busy, sipp_dir):
        assert_completed(call_as("uac_call_expect_failure", "bob", variables={"expected": 486}), "busy")
        assert_uas_completed(busy, "bob busy")

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    # every counter asserted exactly below is awaited: workers copy theirs once a
    # second, and the CDRs can arrive before the last un-REGISTER's copy
    expected = {("sipledger_dialog_processed_total", ()): 2, ("sipledger_dialog_failed_total", ()): 1,
                ("sipledger_cdr_records_total", ()): 3, ("sipledger_auth_challenges_total", ()): 3 + 4,
                ("sipledger_core_rcv_requests_total", (("method", "REGISTER"),)): 2 * 4}
    processors = {"cdr", "cdr_sink", "ledger_sink"}       # the CDR processor reports on its 5 s timer

    def lagging() -> set[str]:
        return {dict(labels)["processor"] for name, labels in after if name == "sipledger_consumer_lag"}

    deadline = time.monotonic() + 15            # workers copy their counters once a second
    while True:
        after = _scrape(sipledger)
        if all(grew(name, **dict(labels)) >= n for (name, labels), n in expected.items()) \
                and processors <= lagging() \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert grew("sipledger_dialog_processed_total") == 2
    assert grew("sipledger_dialog_failed_total") == 1
    # each call: INVITE, 407, ACK, INVITE with credentials; answered ones end with a BYE
    assert grew("sipledger_core_rcv_requests_total", method="INVITE") == 6
    assert grew("sipledger_core_rcv_requests_total", method="BYE") == 2
    assert grew("sipledger_core_fwd_requests_total", method="INVITE") == 3
    assert grew("sipledger_core_fwd_requests_total", method="BYE") == 2
    # one challenge per INVITE and per REGISTER (two registrations, two un-registrations)
    assert grew("sipledger_auth_challenges_total") == 3 + 4
    assert grew("sipledger_core_rcv_requests_total", method="REGISTER") == 2 * 4
    assert grew("sipledger_core_fwd_replies_total", **{"class": "4xx"}) == 1       # the 486
    assert grew("sipledger_tm_replies_total", **{"class": "2xx"}) >= 4            # 2 INVITE + 2 BYE (+ REGISTERs)
    assert grew("sipledger_cdr_records_total") == 3
    assert grew("sipledger_cdr_event_to_cdr_seconds_count") == 3
    assert grew("sipledger_credit_authorize_seconds_count") == 3      # one per authenticated INVITE
    assert grew("sipledger_events_published_total") > 0
    assert after[("sipledger_dialog_active", ())] == 0
    assert after[("sipledger_tm_transactions", ())] >= 0
    assert after[("sipledger_usrloc_registered_contacts", ())] == 0       # bob un-registered
    assert after[("sipledger_lockout_locks", ())] == 0
    assert processors <= lagging(), lagging()

    shown = sipledger.run_cli("stats", "dialog").stdout
    rows = dict(line.split() for line in shown.splitlines() if line.strip())
    assert float(rows["dialog:processed"]) == after[("sipledger_dialog_processed_total", ())], shown


# --------------------------------------------------------------- dialog timeout

def test_dialog_timeout_proxy_sends_bye_both_ways(short_dialogs_up, uas_factory, sipp_dir):
    sl = short_dialogs_up
    uas = uas_factory("uas_bye_from_proxy", timeout=20)
    with registered(sl, "bob", uas, sipp_dir):
        res = run_uac("uac_wait_bye", sl.sip_addr,
                      {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 15,
                      auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}",
                      workdir=sipp_dir)
        assert_completed(res, "alice waits for the proxy's BYE")
        uas_res = assert_uas_completed(uas, "bob waits for the proxy's BYE")

    call_id, from_tag, _ = _call_ids(res)
    to_tag = [m for m in res.received(200) if m.cseq_method == "INVITE"][0].tag("To")
    (bye_caller,) = res.received("BYE")
    (bye_callee,) = uas_res.received("BYE")
    # towards the caller: From = callee's side; towards the callee: From = caller's side
    assert (bye_caller.tag("From"), bye_caller.tag("To")) == (to_tag, from_tag)
    assert (bye_callee.tag("From"), bye_callee.tag("To")) == (from_tag, to_tag)
    assert bye_caller.header("Call-ID") == bye_callee.header("Call-ID") == call_id
    # nobody but the proxy sent them: no SIPp sent a BYE
    assert res.sent("BYE") == [] and uas_res.sent("BYE") == []

    events = _events(sl, call_id, "call.answered", "dialog.timeout")
    types = event_types(events)
    assert types[:5] == ["invite.received", "invite.routed", "call.progress", "call.answered",
                         "call.ack"], types
    assert "dialog.timeout" in types, types
    assert set(types[5:]) <= {"dialog.timeout", "call.bye"}, types
    _check_common(events, call_id, from_tag)
    answered = events[3]
    assert answered["max_duration_s"] == SHORT_MAX_DIALOG
    timeout_ev = events[types.index("dialog.timeout")]
    assert timeout_ev["max_duration_s"] == SHORT_MAX_DIALOG
    assert timeout_ev["to_tag"] == to_tag
    assert timeout_ev["answered_ms"] <= timeout_ev["ts_ms"]
    # the proxy must not cut the call before its maximum duration (its own clock)
    assert timeout_ev["ts_ms"] - timeout_ev["answered_ms"] >= SHORT_MAX_DIALOG * 1000 - 100
    for e in events[5:]:
        if e["type"] == "call.bye":
            assert e["by"] == "proxy"
