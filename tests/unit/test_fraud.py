"""The fraud checker (proxy/core/fraud.py): thresholds, windows, hours and weekdays.
Times are built explicitly (never today's date)."""
from datetime import datetime, timezone

import pytest

from proxy.core.fraud import FraudChecker, FraudRule, FraudRuleError, parse_days, validate

# Wednesday 2031-05-14 10:00:00 UTC
WED_10 = datetime(2031, 5, 14, 10, 0, tzinfo=timezone.utc).timestamp()
SAT_10 = datetime(2031, 5, 17, 10, 0, tzinfo=timezone.utc).timestamp()


def rule(**kw) -> FraudRule:
    return validate(FraudRule(rule_id=kw.pop("rule_id", 1), profile="default", **kw))


def severities(alerts, parameter):
    return [a.severity for a in alerts if a.parameter == parameter]


def test_cpm_warning_then_critical_in_a_gliding_minute():
    checker = FraudChecker((rule(prefix="44", cpm_warning=3, cpm_critical=5),))
    raised = [checker.check("alice@x", "4420", "default", f"c{i}", WED_10 + i) for i in range(5)]
    assert [severities(a, "cpm") for a in raised] == [[], [], ["warning"], ["warning"], ["critical"]]
    # a minute after the first calls the window holds only the new call
    assert checker.check("alice@x", "4420", "default", "late", WED_10 + 65) == []


def test_counters_are_per_user_and_rule_prefix_longest_match():
    rules = (rule(rule_id=1, prefix="4", total_calls_critical=2),
             rule(rule_id=2, prefix="449", total_calls_critical=100))
    checker = FraudChecker(rules)
    assert checker.check("a@x", "44900", "default", "1", WED_10) == []
    assert checker.check("a@x", "44901", "default", "2", WED_10) == []      # 449 rule: 2 < 100
    assert checker.check("b@x", "4100", "default", "3", WED_10) == []
    alerts = checker.check("b@x", "4200", "default", "4", WED_10)
    assert [(a.severity, a.parameter, a.prefix, a.rule_id) for a in alerts] == [
        ("critical", "total_calls", "4", 1)]


def test_concurrent_calls_released_when_the_call_ends():
    checker = FraudChecker((rule(concurrent_calls_critical=2),))
    assert checker.check("a@x", "1", "default", "c1", WED_10) == []
    assert severities(checker.check("a@x", "1", "default", "c2", WED_10), "concurrent_calls") == ["critical"]
    checker.ended("c1", WED_10 + 1)
    checker.ended("c2", WED_10 + 1)
    assert checker.check("a@x", "1", "default", "c3", WED_10 + 2) == []


def test_sequential_calls_restart_on_another_prefix():
    checker = FraudChecker((rule(rule_id=1, prefix="1", sequential_calls_warning=3),
                            rule(rule_id=2, prefix="2")))
    for i in range(2):
        assert checker.check("a@x", "100", "default", f"a{i}", WED_10 + i) == []
    assert checker.check("a@x", "200", "default", "b", WED_10 + 3) == []
    assert checker.check("a@x", "100", "default", "c", WED_10 + 4) == []
    assert checker.check("a@x", "100", "default", "d", WED_10 + 5) == []
    assert severities(checker.check("a@x", "100", "default", "e", WED_10 + 6),
                      "sequential_calls") == ["warning"]


def test_call_duration_judged_at_the_end_of_an_answered_call():
    checker = FraudChecker((rule(call_duration_warning=60, call_duration_critical=3600),))
    checker.check("a@x", "1", "default", "long", WED_10)
    checker.answered("long", WED_10 + 2)
    alerts = checker.ended("long", WED_10 + 2 + 3700)
    assert [(a.severity, a.value) for a in alerts] == [("critical", 3700)]
    checker.check("a@x", "1", "default", "unanswered", WED_10)
    assert checker.ended("unanswered", WED_10 + 5000) == []


def test_hours_and_weekdays_select_the_rule_and_total_restarts_per_interval():
    checker = FraudChecker((rule(days="mon-fri", start_hour="09:00", end_hour="17:00",
                                 total_calls_warning=2),))
    assert checker.check("a@x", "1", "default", "sat", SAT_10) == []        # weekend: no rule
    assert checker.check("a@x", "1", "default", "early", WED_10 - 3 * 3600) == []   # 07:00
    assert checker.check("a@x", "1", "default", "w1", WED_10) == []
    assert severities(checker.check("a@x", "1", "default", "w2", WED_10 + 60), "total_calls") == ["warning"]
    thursday = WED_10 + 86400
    assert checker.check("a@x", "1", "default", "t1", thursday) == []       # a new interval


def test_interval_across_midnight():
    checker = FraudChecker((rule(days="wed", start_hour="22:00", end_hour="06:00", cpm_critical=1),))
    thursday_3am = WED_10 + 17 * 3600
    assert severities(checker.check("a@x", "1", "default", "n", thursday_3am), "cpm") == ["critical"]
    assert checker.check("a@x", "1", "default", "d", WED_10) == []          # 10:00: outside


def test_rates_are_estimated_over_the_workers():
    checker = FraudChecker((rule(cpm_critical=4, concurrent_calls_critical=2),), workers=4)
    alerts = checker.check("a@x", "1", "default", "c1", WED_10)
    assert severities(alerts, "cpm") == ["critical"]           # 1 local call x 4 workers
    assert severities(alerts, "concurrent_calls") == []         # a lower bound: never scaled


@pytest.mark.parametrize("bad", [dict(prefix="44a"), dict(start_hour="25:00"), dict(days="funday"),
                                 dict(cpm_warning=10, cpm_critical=5), dict(total_calls_warning=-1)])
def test_invalid_rules_refused(bad):
    with pytest.raises(FraudRuleError):
        rule(**bad)


def test_days_syntax():
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days("sat-mon") == frozenset({5, 6, 0})
    assert parse_days("*") == frozenset(range(7))


# -- at INVITE, through the default routing script (in memory) ------------------------------

def _rig(tmp_path, **fraud):
    from proxy.core.fraudguard import FraudGuard
    from proxy.infra.config import FraudSettings
    from tests.harness.corefake import CoreRig
    rig = CoreRig(tmp_path, auth=True)
    rig.core.fraud = FraudGuard(rig.core, FraudSettings(**fraud))
    rig.cli("domain", "add", "example.test")
    rig.cli("user", "add", "alice@example.test", "--password", "a-secret")
    rig.cli("gateway", "add", "gw1", "--address", "198.51.100.1:5060")
    rig.cli("route", "add", "--prefix", "0", "--gateways", "gw1")
    rig.cli("fraud", "profile", "add", "default")
    rig.cli("fraud", "rule", "add", "default", "--prefix", "00", "--cpm", "2:3")
    return rig


def _call(rig, call_id):
    from tests.harness.corefake import ALICE, invite
    out = rig.authenticated(invite(call_id=call_id, to="00441234", branch=f"z9hG4bK{call_id}"),
                            ALICE, "alice", "a-secret")
    return [m.status for m, _ in out if m.status], [m for m, _ in out if m.method == "INVITE"]


def test_critical_breach_refuses_with_403_and_is_listed(tmp_path):
    rig = _rig(tmp_path)
    assert _call(rig, "f1")[1] and _call(rig, "f2")[1]          # 2nd: warning, relayed
    statuses, relayed = _call(rig, "f3")
    assert 403 in statuses and not relayed
    alerts = [e for e in rig.effects.events if e.__class__.__name__ == "FraudAlert"]
    assert [(a.severity, a.value, a.action, a.call_id) for a in alerts] == [
        ("warning", 2, "none", "f2"), ("critical", 3, "refused", "f3")]
    rig.reload()                                                 # the poll writes the alert rows
    rows = rig.store.fraud_alerts()
    assert [(r["severity"], r["action"], r["user"]) for r in rows] == [
        ("critical", "refused", "alice@example.test"), ("warning", "none", "alice@example.test")]
    rig.cli("fraud", "list")                                     # the listing runs


def test_critical_breach_only_reported_without_block_critical(tmp_path):
    rig = _rig(tmp_path, block_critical=False)
    for call_id in ("f1", "f2", "f3"):
        assert _call(rig, call_id)[1]
    assert [e.action for e in rig.effects.events if e.__class__.__name__ == "FraudAlert"] == ["none", "none"]


# -- billing: [fraud] block_account ----------------------------------------------------------

def test_billing_blocks_the_account_of_a_block_account_alert():
    import asyncio
    from collections import Counter
    from types import SimpleNamespace

    from billing.credit.service import BillingService
    from billing.errors import LedgerError
    from proxy.contract import events as ev

    calls = []

    async def put_account(account, fields, *, create):
        calls.append((account, fields, create))
        if account == "nobody@x":
            raise LedgerError("account nobody@x does not exist", status=404)
        return {}

    service = SimpleNamespace(app=SimpleNamespace(put_account=put_account), stats=Counter(), own=None)  # one instance
    alert = ev.FraudAlert(id="1", ts_ms=0, call_id="c", from_tag="t", proxy="p", severity="critical",
                          parameter="cpm", value=5, threshold=3, user="alice@x", account="alice@x",
                          number="00", prefix="00", profile="default", rule_id=1, action="block_account")
    asyncio.run(BillingService._block_for_fraud(service, alert))
    asyncio.run(BillingService._block_for_fraud(service, ev.FraudAlert(**{
        **{f: getattr(alert, f) for f in alert.__struct_fields__}, "account": "nobody@x"})))
    assert calls == [("alice@x", {"status": "blocked"}, False), ("nobody@x", {"status": "blocked"}, False)]
    assert service.stats["fraud_blocks"] == 1


def test_critical_call_duration_caps_the_dialog(tmp_path):
    rig = _rig(tmp_path)
    rig.cli("fraud", "rule", "add", "default", "--prefix", "0044", "--call-duration", "60:120")
    assert _call(rig, "d1")[1]
    (received,) = [e for e in rig.effects.events if e.__class__.__name__ == "InviteReceived"]
    assert received.max_duration_s == 120
