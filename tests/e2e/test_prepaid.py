"""Prepaid end to end with SIPp phones: `sipledger up` with the authorization
call enabled, the billing service (``python -m billing``) on the same data dir
and broker (started here unless `up` runs it already).

* a prepaid account with credit for ~5 s calls; the proxy tears the call down
  (BYE both ways, Reason "credit exhausted") within 1 s of exhaustion; the
  CDR says so; the balance ends >= 0 and within one increment of 0;
* 2 and 5 concurrent calls on one account never spend more than the credit
  + one increment per call;
* zero balance -> 402 before the callee rings;
* ``[fraud] block_account``: a call crossing a critical fraud threshold is
  refused with 403, billing blocks the caller's account and tears down the
  call it had in progress.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal

import pytest

from billing.ledger.store import ServiceLock
from tests.harness.billing import BillingProcess
from tests.harness.calls import DOMAIN, PASSWORDS, refused_call, registered, start_sipledger
from tests.harness.poll import eventually
from tests.harness.proxy import event_types, read_events
from tests.harness.sipp import run_uac

# Paid time, teardowns and the ledger run on the clock of `up` and billing:
# the teardown when credit runs out (the whole path: authorization, paid
# time, teardown, CDR, debit) also runs a year ahead; the refusal and the
# shared credit are the same arithmetic without a date in it.
pytestmark = pytest.mark.e2e

ALICE = f"alice@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
DAVE = f"dave@{DOMAIN}"                 # the fraud test's caller: blocked by it
RATES = "plan,prefix,name,price_per_min,first_increment,next_increment,rounding,decimals,currency\n" \
        "retail,*,anywhere,0.60,1,1,up,4,EUR\n"
INCREMENT = Decimal("0.01")             # 1 s at 0.60/min


@pytest.fixture(scope="module")
def sl(tmp_path_factory):
    sl = start_sipledger(tmp_path_factory.mktemp("sipledger-prepaid") / "data",
                         extra_config="[authorization]\nenabled = true\ntimeout_ms = 500\n"
                                      "[fraud]\nblock_account = true\n")
    rates = sl.data_dir / "rates.csv"
    rates.write_text(RATES)
    sl.run_cli("rates", "import", str(rates))
    for account in (ALICE, CAROL, DAVE):
        sl.run_cli("rates", "assign", account, "retail")
        sl.run_cli("account", "add", account, "--prepaid", "--currency", "EUR")
    # `up` runs the billing service once it is wired in; until then it runs beside `up`
    sl.billing = None
    if not ServiceLock(sl.data_dir).held_elsewhere():
        sl.billing = BillingProcess(sl.data_dir, sl.config_path, sl.kafka_bootstrap).start()
    sl.admin_client()
    yield sl
    if sl.billing is not None:
        sl.billing.stop()
    sl.stop()


def balance(sl, account: str) -> dict:
    return json.loads(sl.run_cli("account", "show", account, "--json").stdout)


def settled(sl, account: str, timeout: float = 30.0) -> dict:
    """The account once no call holds a reservation any more (CDRs debited)."""
    def idle() -> dict | None:
        snap = balance(sl, account)
        if Decimal(snap["reserved"]) == 0 and Decimal(snap["held"]) == 0 and not snap["active_calls"]:
            return snap
        return None
    return eventually(idle, f"{account} without reservations", timeout, interval=0.3)


@pytest.fixture
def alice_at_zero(sl) -> dict:
    """alice settled with a balance of exactly 0, whatever tests ran before."""
    left = Decimal(settled(sl, ALICE)["balance"])
    if left:
        sl.run_cli("account", "adjust", ALICE, str(-left), "--key", f"zero-{uuid.uuid4().hex}",
                   "--note", "test: start from zero")
    snap = settled(sl, ALICE)
    assert Decimal(snap["balance"]) == 0, snap
    return snap


def calls_in_parallel(sl, sipp_dir, n: int, timeout: float = 40) -> list:
    results: list = [None] * n

    def one(i: int) -> None:
        results[i] = run_uac("uac_wait_bye", sl.sip_addr, {"caller": "alice", "callee": "bob", "domain": DOMAIN},
                             timeout, auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}",
                             workdir=sipp_dir, name=f"uac_prepaid_{n}_{i}")
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 15)
    return results


def test_zero_balance_is_refused_with_402_before_ringing(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_answer", timeout=15)
    refused_call(sl, "carol", bob, sipp_dir, 402)
    time.sleep(0.5)           # a negative check: no INVITE reaches bob within this half second
    assert bob.result().received("INVITE") == [], "the callee must not ring"


@pytest.mark.clock
def test_call_torn_down_when_credit_runs_out(sl, alice_at_zero, uas_factory, sipp_dir):
    sl.run_cli("account", "topup", ALICE, "0.05", "--key", "five-seconds")      # 5 s at 0.60/min
    bob = uas_factory("uas_bye_from_proxy", timeout=40)
    with registered(sl, "bob", bob, sipp_dir):
        (res,) = calls_in_parallel(sl, sipp_dir, 1)
        assert res.returncode == 0 and res.successful == 1, res.describe()
        assert res.sent("BYE") == [] and len(res.received("BYE")) == 1          # hung up by the proxy
        bye = res.received("BYE")[0]
        assert "credit exhausted" in (bye.header("Reason") or "")
    call_id = res.sent("INVITE")[0].header("Call-ID")
    events = read_events(sl.kafka_bootstrap, "sip.events", call_id=call_id, timeout=15,
                         until=lambda evs: "dialog.teardown" in event_types(evs))
    answered = next(e for e in events if e["type"] == "call.answered")["ts_ms"]
    teardown = next(e for e in events if e["type"] == "dialog.teardown")
    assert teardown["reason"] == "credit exhausted" and teardown["result"] == "sent"
    talk_ms = teardown["ts_ms"] - answered
    assert 4000 <= talk_ms <= 6000, f"torn down {talk_ms} ms after the answer (credit: 5 s)"
    snap = settled(sl, ALICE)
    assert Decimal("0") <= Decimal(snap["balance"]) <= INCREMENT, snap
    # the CDR says why the call ended
    def cdr_written() -> dict | None:
        page = sl.client.get("/v1/cdrs", params={"account": ALICE, "limit": 5}).json()["items"]
        return next((c for c in page if c["call_id"] == call_id), None)
    cdr = eventually(cdr_written, f"the CDR of {call_id}", 20, interval=0.3)
    assert cdr["hangup_reason"] == "credit exhausted", cdr


@pytest.mark.parametrize("n", [2, 5])
def test_concurrent_calls_share_the_credit(sl, alice_at_zero, uas_factory, sipp_dir, n):
    before = Decimal(alice_at_zero["balance"])
    credit = Decimal("0.08")                                 # 8 s of talk for all n calls together
    sl.run_cli("account", "topup", ALICE, str(credit), "--key", f"concurrent-{n}")
    bob = uas_factory("uas_bye_from_proxy", timeout=60, calls=n)
    with registered(sl, "bob", bob, sipp_dir):
        results = calls_in_parallel(sl, sipp_dir, n)
    answered = 0
    for res in results:
        assert res is not None
        # answered and hung up by the proxy, or refused (402) when the credit was gone
        if res.received(402):
            continue
        assert res.returncode == 0 and len(res.received("BYE")) == 1, res.describe()
        assert res.sent("BYE") == []
        answered += 1
    assert answered >= 1
    snap = settled(sl, ALICE)
    spent = before + credit - Decimal(snap["balance"])
    assert spent <= credit + n * INCREMENT, (spent, snap)
    assert Decimal(snap["balance"]) >= -n * INCREMENT


def test_fraud_critical_blocks_the_account_and_tears_its_live_call_down(sl, uas_factory, sipp_dir):
    """dave talks to bob; then a call to a premium prefix crosses the fraud rule's
    critical calls-per-minute: 403, a fraud.alert with action block_account,
    billing blocks dave's account and sends BYE both ways on the call in progress."""
    from tests.harness.sipp import free_udp_port
    sl.run_cli("account", "topup", DAVE, "5", "--key", "dave-fraud-credit")
    sl.run_cli("gateway", "add", "premium", "--address", f"127.0.0.1:{free_udp_port()}")   # never reached
    sl.run_cli("route", "add", "--prefix", "0900", "--gateways", "premium")
    sl.run_cli("fraud", "profile", "add", "default")
    sl.run_cli("fraud", "rule", "add", "default", "--prefix", "0900", "--cpm", "0:1")
    sl.wait_until_loaded()
    bob = uas_factory("uas_bye_from_proxy", timeout=40)
    box: dict = {}

    def talk() -> None:
        box["res"] = run_uac("uac_wait_bye", sl.sip_addr, {"caller": "dave", "callee": "bob", "domain": DOMAIN},
                             30, auth=("dave", PASSWORDS["dave"]), auth_uri=f"bob@{DOMAIN}",
                             workdir=sipp_dir, name="uac_dave_talks")
    with registered(sl, "bob", bob, sipp_dir):
        talking = threading.Thread(target=talk, daemon=True)
        talking.start()
        assert bob.wait_for("ACK", 15), "dave's call to bob was not answered"
        fraud = run_uac("uac_call_expect_failure", sl.sip_addr,
                        {"caller": "dave", "callee": "0900123", "domain": DOMAIN}, 15,
                        auth=("dave", PASSWORDS["dave"]), auth_uri=f"0900123@{DOMAIN}", workdir=sipp_dir,
                        name="uac_dave_premium", variables={"expected": 403})
        assert fraud.returncode == 0 and fraud.successful == 1, fraud.describe()
        talking.join(35)
    res = box["res"]
    assert res.returncode == 0 and res.successful == 1, res.describe()
    assert res.sent("BYE") == [] and len(res.received("BYE")) == 1           # hung up by the proxy
    assert len(bob.result().received("BYE")) == 1
    fraud_id = fraud.sent("INVITE")[0].header("Call-ID")
    (alert,) = [e for e in read_events(sl.kafka_bootstrap, "sip.events", call_id=fraud_id, timeout=10,
                                       types=["fraud.alert"], until=lambda evs: bool(evs))]
    assert (alert["severity"], alert["parameter"], alert["action"], alert["account"]) == \
        ("critical", "cpm", "block_account", DAVE), alert
    talk_id = res.sent("INVITE")[0].header("Call-ID")
    events = read_events(sl.kafka_bootstrap, "sip.events", call_id=talk_id, timeout=10,
                         until=lambda evs: "dialog.teardown" in event_types(evs))
    teardown = next(e for e in events if e["type"] == "dialog.teardown")
    assert teardown["result"] == "sent", teardown
    assert balance(sl, DAVE)["status"] == "blocked"
