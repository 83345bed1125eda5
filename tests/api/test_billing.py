"""The billing routes over a real chdb store and billing database: accounts, top-ups
exactly once per Idempotency-Key, balances, rates CRUD, ledger history paged from
the ClickHouse copy, streamed report downloads with exact money, and ``ledger
check`` against CDRs in ClickHouse.  Dates follow the wall clock
(proxy/infra/clock.py), so the suite passes whatever today is."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D
from types import SimpleNamespace

import pytest

from billing.ledger.accounts import AccountInfo
from billing.ledger.clickhouse import LedgerQueries, LedgerRepair
from billing.ledger.events import debit_id, money_event
from billing.rating.model import Rate, rate_call
from billing.reports.export import read_export
from cdr.store.queries import CdrStore
from proxy.contract.ledger import LedgerEvent
from proxy.infra import clock
from tests.harness.api import ALICE, BOB, CAROL
from tests.harness.billing import cdr_leg

pytestmark = pytest.mark.integration

NUMBER = "4930123456"
NOV = 1_793_491_200_000                 # 2026-11-01T00:00:00Z: CAROL's month, every time explicit
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


@pytest.fixture
def carol(billing_api):
    """CAROL's November 2026, written as the service would have: the account
    (created Nov 1st, 00:30), a top-up of 10.50 at 00:45, three answered calls
    from 01:00 with their CDRs in ClickHouse and their debits in the ledger.
    Every time is explicit: nothing depends on today's date or another test."""
    env = billing_api
    rates, ledger_store = env.state.rates_store, env.state.ledger_store
    rates.create_plan("history")
    rates.add_rate("history", Rate(prefix="49", price_per_min=D("0.60"), currency="EUR", first_increment=1,
                                   next_increment=1, rounding="up"))
    rates.assign(CAROL, "history")
    plan = rates.get_plan("history")
    info = AccountInfo(id=CAROL, created_ms=NOV + 1_800_000, updated_ms=NOV + 1_800_000)
    ledger_store.put_account(info, create=True)
    topup = money_event(info, "topup", D("10.50"), "carol-pay-1", ts_ms=NOV + 2_700_000)
    base = NOV + 3_600_000
    legs = [cdr_leg(f"api-call-{i}", CAROL, NUMBER, base + i * 60_000, base + i * 60_000 + 10_000 * (i + 1))
            for i in range(3)]
    CdrStore(env.backend).insert_legs(legs)
    debits = [LedgerEvent(id=debit_id(leg.cdr_id, 0), account=CAROL, kind="debit", currency="EUR",
                          amount=rate_call(plan, NUMBER, leg.answer_ms, leg.duration_ms).total,
                          ts_ms=leg.end_ms + 100, cdr_id=leg.cdr_id, leg=0, call_id=leg.call_id,
                          answer_ms=leg.answer_ms, duration_ms=leg.duration_ms, number=NUMBER, plan="history",
                          prefix="49", gateway="gw-1", billed_s=leg.duration_ms // 1000) for leg in legs]
    ledger_store.append([topup, *debits])
    return SimpleNamespace(info=info, plan=plan, topup=topup, debits=debits, base=base)


def test_history_reports_and_check(billing_api, carol):
    env = billing_api
    backend, ledger_store = env.backend, env.state.ledger_store
    repair = LedgerRepair(LedgerQueries(backend), ledger_store)
    assert repair.repair_once() >= 4                      # ClickHouse lacked them: copied from SQLite
    assert repair.repair_once() == 0
    # history, newest first, paged
    page = env.call("GET", f"/v1/accounts/{CAROL}/ledger", who="carol", params={"limit": 2}).json()
    assert [e["kind"] for e in page["items"]] == ["debit", "debit"] and page["next_cursor"]
    rest = env.call("GET", f"/v1/accounts/{CAROL}/ledger", who="carol",
                    params={"limit": 10, "cursor": page["next_cursor"]}).json()
    assert [e["kind"] for e in rest["items"]] == ["debit", "topup"] and rest["next_cursor"] is None
    assert D(rest["items"][-1]["amount"]) == D("10.50")          # Decimal(18,6): "10.500000"
    assert env.call("GET", f"/v1/accounts/{CAROL}/ledger", who="bob").status_code == 403
    # reports, streamed, exact
    total = sum((e.amount for e in carol.debits), D(0))
    for fmt in ("csv", "parquet", "xlsx"):
        r = env.call("GET", f"/v1/accounts/{CAROL}/reports/statement", who="carol",
                     params={"format": fmt, "from": "2026-10", "to": "2026-11"})
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        frame = read_export(r.content, fmt)
        assert frame["balance"].iloc[-1] == D("10.50") - total, fmt
        assert list(frame["kind"]) == ["opening", "topup", "debit", "debit", "debit", "closing"], fmt
    csv_text = env.call("GET", f"/v1/accounts/{CAROL}/reports/statement", who="carol",
                        params={"format": "csv", "month": "2026-11"}).text
    assert ",top-up,carol-pay-1,EUR,10.50,10.50" in csv_text     # the one money rule, read from ClickHouse
    gw = read_export(env.call("GET", "/v1/reports/gateways", params={"month": "2026-11"}).content, "csv")
    assert list(gw["gateway"]) == ["gw-1"] and gw["cost"].iloc[0] == total
    assert env.call("GET", "/v1/reports/gateways", who="carol").status_code == 403
    # reconciliation: equal; then a call before the account existed is not billable,
    # and a missing debit is listed
    check = env.call("GET", "/v1/ledger/check", params={"from": "2026-11", "to": "2026-11"}).json()
    assert check["ok"], check
    (period,) = [p for p in check["periods"] if p["account"] == CAROL]
    assert D(period["rated"]) == D(period["debited"]) == total and period["cdr_legs"] == 3
    early = cdr_leg("api-call-early", CAROL, NUMBER, NOV + 600_000, NOV + 660_000)       # before 00:30
    extra = cdr_leg("api-call-x", CAROL, NUMBER, carol.base + 600_000, carol.base + 660_000)
    CdrStore(backend).insert_legs([early, extra])
    check = env.call("GET", "/v1/ledger/check", params={"from": "2026-11", "to": "2026-11"}).json()
    assert not check["ok"] and [d["kind"] for d in check["differences"]] == ["missing_debit"]
    assert check["differences"][0]["cdr_id"] == extra.cdr_id and check["differences"][0]["rated"] == "0.6000"
    assert [(s["kind"], s["cdr_id"]) for s in check["skipped"]] == [("before_account", early.cdr_id)]


