"""The billing routes over a real chdb store and billing database: accounts, top-ups
exactly once per Idempotency-Key, balances, rates CRUD, ledger history paged from
the ClickHouse copy, streamed report downloads with exact money, and ``ledger
check`` against CDRs in ClickHouse.  Dates follow the wall clock
(proxy/infra/clock.py), so the suite passes whatever today is."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D

import pytest

from billing.chledger import LedgerQueries, LedgerRepair
from billing.ledger import debit_id
from billing.rating import rate_call
from billing.reports import read_export
from cdr.store.queries import CdrStore
from proxy.infra import clock
from tests.harness.api import ALICE, BOB
from tests.harness.billing import cdr_leg

pytestmark = pytest.mark.integration

NUMBER = "4930123456"
_NOW = clock.utcnow()
MONTH = f"{_NOW:%Y-%m}"                                                        # this month ...
PREVIOUS = f"{_NOW.year - (_NOW.month == 1)}-{(_NOW.month - 2) % 12 + 1:02d}"  # ... and the one before


def month_start_ms() -> int:
    return int(datetime(_NOW.year, _NOW.month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def test_accounts_rates_topups_and_isolation(billing_api):
    env = billing_api
    assert env.call("POST", "/v1/accounts", json={"id": ALICE}).status_code == 201
    assert env.call("POST", "/v1/accounts", json={"id": BOB, "kind": "postpaid", "credit_limit": "50"}).status_code == 201
    assert env.call("POST", "/v1/accounts", json={"id": ALICE}).status_code == 409
    assert env.call("POST", "/v1/accounts", who="alice", json={"id": "x@y"}).status_code == 403
    assert env.call("GET", "/v1/accounts", who=None).status_code == 401
    # rates CRUD and assignment
    assert env.call("POST", "/v1/rate-plans", json={"name": "retail"}).status_code == 201
    rate = env.call("POST", "/v1/rate-plans/retail/rates",
                    json={"prefix": "49", "price_per_min": "0.60", "currency": "EUR", "first_increment": 1,
                      "next_increment": 1, "rounding": "up"})
    assert rate.status_code == 201 and rate.json()["price_per_min"] == "0.60"
    bad = env.call("POST", "/v1/rate-plans/retail/rates", json={"prefix": "49", "price_per_min": "1e3", "currency": "EUR"})
    assert bad.status_code == 422
    assert env.call("PUT", f"/v1/accounts/{ALICE}/plan", json={"plan": "retail"}).status_code == 200
    assert env.call("GET", f"/v1/accounts/{ALICE}/rates", who="alice").json()["plan"] == "retail"
    assert "0.60" in env.call("GET", "/v1/rate-plans/retail/export").text
    # top-ups: exactly once per key
    key = {"Idempotency-Key": "payment-001"}
    first = env.call("POST", f"/v1/accounts/{ALICE}/topups", json={"amount": "10.50"}, headers=dict(key))
    assert first.status_code == 201 and first.json()["balance"] == "10.50"
    again = env.call("POST", f"/v1/accounts/{ALICE}/topups", json={"amount": "10.50"}, headers=dict(key))
    assert again.status_code == 200 and again.json()["replayed"] and again.json()["balance"] == "10.50"
    assert again.json()["event"]["id"] == first.json()["event"]["id"]
    other = env.call("POST", f"/v1/accounts/{ALICE}/topups", json={"amount": "99"}, headers=dict(key))
    assert other.status_code == 409
    assert env.call("POST", f"/v1/accounts/{ALICE}/topups", json={"amount": "1"}).status_code == 422     # no key
    assert env.call("POST", f"/v1/accounts/{ALICE}/topups", json={"amount": 1.5},
                    headers={"Idempotency-Key": "float"}).status_code == 422                                 # not a string
    assert env.call("POST", f"/v1/accounts/{ALICE}/topups", who="alice", json={"amount": "5"},
                    headers={"Idempotency-Key": "self"}).status_code == 403
    adj = env.call("POST", f"/v1/accounts/{ALICE}/adjustments", json={"amount": "-20"},
                   headers={"Idempotency-Key": "too-much"})
    assert adj.status_code == 409                                                  # prepaid stays >= 0
    # balances: own account yes, another's is forbidden (docs/api.md, "Other accounts")
    assert env.call("GET", f"/v1/accounts/{ALICE}/balance", who="alice").json()["available"] == "10.50"
    assert env.call("GET", f"/v1/accounts/{ALICE}/balance", who="bob").status_code == 403
    assert env.call("GET", f"/v1/accounts/{BOB}/balance", who="bob").json()["available"] == "50"
    assert [a["id"] for a in env.call("GET", "/v1/accounts", who="alice").json()["items"]] == [ALICE]
    blocked = env.call("PATCH", f"/v1/accounts/{BOB}", json={"status": "blocked"})
    assert blocked.status_code == 200 and blocked.json()["status"] == "blocked"


def test_history_reports_and_check(billing_api):
    env = billing_api
    if env.call("GET", f"/v1/accounts/{ALICE}").status_code == 404:
        test_accounts_rates_topups_and_isolation(env)
    backend, ledger_store = env.backend, env.state.ledger_store
    plan = env.state.rates_store.get_plan("retail")
    # three answered calls: CDRs in ClickHouse, their debits in the ledger (as the service writes them)
    base = month_start_ms() + 3_600_000
    legs = [cdr_leg(f"api-call-{i}", ALICE, NUMBER, base + i * 60_000, base + i * 60_000 + 10_000 * (i + 1))
            for i in range(3)]
    CdrStore(backend).insert_legs(legs)
    from billing.ledger import LedgerEvent
    events = [LedgerEvent(id=debit_id(leg.cdr_id, 0), account=ALICE, kind="debit", currency="EUR",
                          amount=rate_call(plan, NUMBER, leg.answer_ms, leg.duration_ms).total,
                          ts_ms=leg.end_ms + 100, cdr_id=leg.cdr_id, leg=0, call_id=leg.call_id,
                          answer_ms=leg.answer_ms, duration_ms=leg.duration_ms, number=NUMBER, plan="retail",
                          prefix="49", gateway="gw-1", billed_s=leg.duration_ms // 1000) for leg in legs]
    ledger_store.append(events)
    repair = LedgerRepair(LedgerQueries(backend), ledger_store)
    assert repair.repair_once() >= 4                      # ClickHouse lacked them: copied from SQLite
    assert repair.repair_once() == 0
    # history, newest first, paged
    page = env.call("GET", f"/v1/accounts/{ALICE}/ledger", who="alice", params={"limit": 2}).json()
    assert [e["kind"] for e in page["items"]] == ["debit", "debit"] and page["next_cursor"]
    rest = env.call("GET", f"/v1/accounts/{ALICE}/ledger", who="alice",
                    params={"limit": 10, "cursor": page["next_cursor"]}).json()
    assert [e["kind"] for e in rest["items"]] == ["debit", "topup"] and rest["next_cursor"] is None
    assert D(rest["items"][-1]["amount"]) == D("10.50")          # Decimal(18,6): "10.500000"
    assert env.call("GET", f"/v1/accounts/{ALICE}/ledger", who="bob").status_code == 403
    # reports, streamed, exact
    total = sum((e.amount for e in events), D(0))
    for fmt in ("csv", "parquet", "xlsx"):
        r = env.call("GET", f"/v1/accounts/{ALICE}/reports/statement", who="alice",
                     params={"format": fmt, "from": PREVIOUS, "to": MONTH})
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        frame = read_export(r.content, fmt)
        assert frame["balance"].iloc[-1] == D("10.50") - total, fmt
    gw = read_export(env.call("GET", "/v1/reports/gateways", params={"month": MONTH}).content, "csv")
    assert list(gw["gateway"]) == ["gw-1"] and gw["cost"].iloc[0] == total
    assert env.call("GET", "/v1/reports/gateways", who="alice").status_code == 403
    # reconciliation: equal, then a missing debit and a wrong one are listed
    check = env.call("GET", "/v1/ledger/check", params={"from": MONTH, "to": MONTH}).json()
    assert check["ok"], check
    (period,) = [p for p in check["periods"] if p["account"] == ALICE]
    assert D(period["rated"]) == D(period["debited"]) == total and period["cdr_legs"] == 3
    extra = cdr_leg("api-call-x", ALICE, NUMBER, base + 600_000, base + 660_000)
    CdrStore(backend).insert_legs([extra])
    check = env.call("GET", "/v1/ledger/check", params={"from": MONTH, "to": MONTH}).json()
    assert not check["ok"] and [d["kind"] for d in check["differences"]] == ["missing_debit"]
    assert check["differences"][0]["cdr_id"] == extra.cdr_id and check["differences"][0]["rated"] == "0.6000"


