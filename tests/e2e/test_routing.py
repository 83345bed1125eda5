"""Routing end to end with SIPp: gateways (longest prefix, dialplan, failover,
probing), blacklists, groups, a trusted gateway calling in, call forwarding.

SIPp UASes play the gateways, the callees and the voicemail; the proxy is a
real `sipledger up` provisioned through its CLI; legs are read back from
`sip.events`.
"""
from __future__ import annotations

import pytest

from tests.harness.calls import DOMAIN, PASSWORDS, assert_completed, assert_uas_completed, registered, start_sipledger
from tests.harness.proxy import event_types, read_events
from tests.harness.sipp import render_scenario, run_uac

pytestmark = pytest.mark.e2e

PROBE_CONFIG = "gateway_probe_seconds = 0.5\n"


@pytest.fixture(scope="module")
def sl(tmp_path_factory):
    sl = start_sipledger(tmp_path_factory.mktemp("sipledger-routing") / "data",
                         extra_config="", proxy_extra=PROBE_CONFIG)
    sl.run_cli("dialplan", "add", "0", "--match", r"^\+49(\d+)$", "--subst", r"^\+49(\d+)$",
               "--repl", r"0\1")
    yield sl
    sl.stop()


def gateway(sl, uas_factory, name, scenario="uas_answer", *, strip=0, prefix="", probe="never",
            code=None, **kw):
    if code is not None:                 # a refusing gateway: its code is baked into the scenario
        scenario = str(render_scenario(scenario, uas_factory.workdir, code=code[0], reason=code[1]))
    uas = uas_factory(scenario, timeout=40, **kw)
    args = ["gateway", "add", name, "--address", f"127.0.0.1:{uas.port}", "--probe", probe]
    if strip:
        args += ["--strip", str(strip)]
    if prefix:
        args += ["--prefix", prefix]
    sl.run_cli(*args)
    return uas


def call(sl, sipp_dir, number, scenario="uac_call", expected=None, **kw):
    keys = {"caller": "alice", "callee": number, "domain": DOMAIN}
    variables = {"expected": expected} if expected is not None else None
    return run_uac(scenario, sl.sip_addr, keys, 20, auth=("alice", PASSWORDS["alice"]),
                   auth_uri=f"{number}@{DOMAIN}", workdir=sipp_dir, variables=variables,
                   hold_ms=100, **kw)


def legs_of(sl, res, until="call.bye"):
    call_id = res.sent("INVITE")[0].header("Call-ID")
    events = read_events(sl.kafka_bootstrap, "sip.events", call_id=call_id, timeout=10,
                         until=lambda evs: until in event_types(evs))
    return [e["leg"] for e in events if e["type"] == "invite.routed"], events


def test_longest_prefix_and_dialplan_decide_what_the_gateway_receives(sl, uas_factory, sipp_dir):
    national = gateway(sl, uas_factory, "national", strip=1, prefix="49")
    foreign = gateway(sl, uas_factory, "foreign", scenario="uas_reject",
                      code=(404, "Not Found"))
    sl.run_cli("route", "add", "--prefix", "0", "--gateways", "national")
    sl.run_cli("route", "add", "--prefix", "0044", "--gateways", "foreign")
    sl.wait_until_loaded()                             # every worker runs with the new routes
    res = call(sl, sipp_dir, "+49301234")
    assert_completed(res, "call to +49301234 via the national gateway")
    (invite,) = national.wait_for("INVITE", 5)
    assert invite.request_uri.startswith("sip:49301234@127.0.0.1")   # +49.. -> 0301234 -> strip/prefix
    assert foreign.received("INVITE") == []
    legs, _ = legs_of(sl, res)
    assert [(leg["index"], leg["gateway"]) for leg in legs] == [(0, "national")]


def test_failover_from_503_to_the_next_gateway(sl, uas_factory, sipp_dir):
    broken = gateway(sl, uas_factory, "broken", scenario="uas_reject",
                     code=(503, "Service Unavailable"))
    backup = gateway(sl, uas_factory, "backup")
    sl.run_cli("route", "add", "--prefix", "07", "--gateways", "broken,backup")
    sl.wait_until_loaded()
    res = call(sl, sipp_dir, "0712345")
    assert_completed(res, "one call for the caller, answered by the backup gateway")
    assert res.received(503) == []
    assert broken.wait_for("ACK", 5) and backup.wait_for("INVITE", 5)
    legs, events = legs_of(sl, res)
    assert [(leg["gateway"], leg["cause"], leg["parent"]) for leg in legs] == \
        [("broken", "initial", None), ("backup", "failover", 0)]
    (failed,) = [e for e in events if e["type"] == "leg.failed"]
    assert failed["code"] == 503 and failed["leg"] == 0
    assert "call.failed" not in event_types(events)


def test_dead_gateway_is_skipped_after_failed_probes(sl, uas_factory, sipp_dir):
    gateway(sl, uas_factory, "dead", scenario="uas_options", probe="always",
            code=(503, "Service Unavailable"), calls=1000)
    alive = gateway(sl, uas_factory, "alive")
    sl.run_cli("route", "add", "--prefix", "08", "--gateways", "dead,alive")
    sl.wait_until_loaded(gateways_down=["dead"])       # 0.5 s probes, two failures = down
    res = call(sl, sipp_dir, "0812345")
    assert_completed(res, "call routed around the dead gateway")
    assert alive.wait_for("INVITE", 5)
    legs, _ = legs_of(sl, res)
    assert [leg["gateway"] for leg in legs] == ["alive"]


def test_blacklisted_destination_473(sl, sipp_dir):
    sl.run_cli("blacklist", "add", "default", "0900")
    sl.wait_until_loaded()
    res = call(sl, sipp_dir, "09001234", scenario="uac_call_expect_failure", expected=473)
    assert_completed(res, "premium number refused")


def test_group_denial_403(sl, uas_factory, sipp_dir):
    gateway(sl, uas_factory, "intl")
    sl.run_cli("route", "add", "--prefix", "001", "--gateways", "intl")
    sl.run_cli("group", "require", "001", "international")
    sl.wait_until_loaded()
    res = call(sl, sipp_dir, "0012025550100", scenario="uac_call_expect_failure", expected=403)
    assert_completed(res, "alice is not in the international group")


def test_trusted_gateway_calls_a_local_user_without_auth(sl, uas_factory, sipp_dir):
    sl.run_cli("trusted", "add", "127.0.0.2/32")
    bob = uas_factory("uas_answer", timeout=20)
    sl.wait_until_loaded()
    with registered(sl, "bob", bob, sipp_dir):
        res = run_uac("uac_plain_call", sl.sip_addr,
                      {"caller": "+4930999", "callee": "bob", "domain": DOMAIN}, 20,
                      workdir=sipp_dir, hold_ms=100, extra_args=["-i", "127.0.0.2"])
        assert_completed(res, "a gateway's call to bob, unchallenged")
        assert_uas_completed(bob, "bob answers the gateway's call")
    assert res.received(407) == []


def test_forward_on_busy(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_busy", timeout=20)
    carol = uas_factory("uas_answer", timeout=20)
    sl.run_cli("forward", "set", f"bob@{DOMAIN}", "--busy", f"carol@{DOMAIN}")
    sl.wait_until_loaded()
    with registered(sl, "bob", bob, sipp_dir), registered(sl, "carol", carol, sipp_dir):
        res = call(sl, sipp_dir, "bob")
        assert_completed(res, "alice -> bob busy -> carol answers")
    sl.run_cli("forward", "clear", f"bob@{DOMAIN}")
    sl.wait_until_loaded()
    legs, _ = legs_of(sl, res)
    assert [(leg["cause"], leg["parent"], leg["reason"], leg["forwarded_by"]) for leg in legs] == \
        [("initial", None, None, None), ("forward", 0, "busy", f"bob@{DOMAIN}")]


def test_forward_on_no_answer_cancels_the_first_leg(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_noanswer", timeout=20)
    carol = uas_factory("uas_answer", timeout=20)
    sl.run_cli("forward", "set", f"bob@{DOMAIN}", "--no-answer", f"carol@{DOMAIN}", "--timeout", "2")
    sl.wait_until_loaded()
    with registered(sl, "bob", bob, sipp_dir), registered(sl, "carol", carol, sipp_dir):
        res = call(sl, sipp_dir, "bob")
        assert_completed(res, "alice -> bob rings out -> carol answers")
        assert bob.wait_for("CANCEL", 5)
    sl.run_cli("forward", "clear", f"bob@{DOMAIN}")
    sl.wait_until_loaded()
    legs, events = legs_of(sl, res)
    assert [(leg["cause"], leg["reason"]) for leg in legs] == [("initial", None), ("forward", "no_answer")]
    (failed,) = [e for e in events if e["type"] == "leg.failed"]
    assert failed["code"] == 408


def test_unconditional_forward_to_voicemail(sl, uas_factory, sipp_dir):
    voicemail = uas_factory("uas_answer", timeout=20)
    sl.run_cli("forward", "media", "add", "voicemail", f"sip:vm@127.0.0.1:{voicemail.port}")
    sl.run_cli("forward", "set", f"bob@{DOMAIN}", "--always", "voicemail")
    sl.wait_until_loaded()
    res = call(sl, sipp_dir, "bob")
    assert_completed(res, "alice -> bob -> voicemail")
    (invite,) = voicemail.wait_for("INVITE", 5)
    assert invite.request_uri.startswith("sip:vm@127.0.0.1")
    sl.run_cli("forward", "clear", f"bob@{DOMAIN}")
    sl.wait_until_loaded()
    legs, _ = legs_of(sl, res)
    assert [(leg["cause"], leg["reason"]) for leg in legs] == [("forward", "unconditional")]


def test_fraud_burst_crosses_cpm_critical_and_is_refused(sl, uas_factory, sipp_dir):
    """A SIPp burst of 5 calls against a rule of 2 (warning) / 3 (critical) calls per
    minute (one worker: exact counts): calls 1-2 reach the gateway, 3-5 are refused
    with 403; the alerts are fraud.alert events and rows of `sipledger fraud list`."""
    from proxy.provisioning.store import ProvisioningStore, default_url
    from tests.harness.poll import eventually

    gw = gateway(sl, uas_factory, "fraudgw", calls=2)         # answers the two calls let through
    sl.run_cli("route", "add", "--prefix", "0777", "--gateways", "fraudgw")
    sl.run_cli("fraud", "profile", "add", "default")
    sl.run_cli("fraud", "rule", "add", "default", "--prefix", "0777", "--cpm", "2:3")
    sl.wait_until_loaded()
    res = call(sl, sipp_dir, "0777123", calls=5, extra_args=("-l", "1"))    # one after another
    refused = {m.header("Call-ID") for m in res.received(403)}
    relayed = {m.header("Call-ID") for m in gw.received("INVITE")}
    assert len(refused) == 3 and len(relayed) == 2 and res.successful == 2, res.describe()
    events = read_events(sl.kafka_bootstrap, "sip.events", timeout=10, types=["fraud.alert"],
                         until=lambda evs: sum(e["severity"] == "critical" for e in evs) >= 3)
    alerts = sorted((e["severity"], e["value"], e["action"]) for e in events      # partitions: any order
                    if e["user"] == f"alice@{DOMAIN}")
    assert alerts == [("critical", 3, "refused"), ("critical", 4, "refused"), ("critical", 5, "refused"),
                      ("warning", 2, "none")]
    assert {e["call_id"] for e in events if e["severity"] == "critical"} == refused
    store = ProvisioningStore(default_url(sl.data_dir))
    try:
        eventually(lambda: len(store.fraud_alerts(user=f"alice@{DOMAIN}")) == 4, "4 alerts listed", timeout=10)
    finally:
        store.close()


def test_a_rest_change_is_live_within_a_second(sl, sipp_dir):
    """The panel's way in: a blacklist entry added through /v1 reaches the running
    proxy as the CLI's do (one service layer, same store, same change log)."""
    client = sl.client or sl.admin_client()
    response = client.post("/v1/blacklists", json={"list": "default", "prefix": "0901"})
    assert response.status_code == 201, response.text
    sl.wait_until_loaded(timeout=1.0)          # the bound: live within a second
    res = call(sl, sipp_dir, "09011234", scenario="uac_call_expect_failure", expected=473)
    assert_completed(res, "a number blacklisted through REST is refused")
