"""Billing REST routes over a real chdb store (billing/api.py): auth as the CDR
API (admin vs account tokens), accounts, top-ups exactly once per
Idempotency-Key, balances, ledger history paged from the ClickHouse copy,
streamed report downloads with exact money, rates CRUD, ``ledger check``
against CDRs in ClickHouse; and the ledger sink fed from the real broker."""
from __future__ import annotations

import asyncio
import time
from decimal import Decimal as D

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import open_store
from billing.api_process import mount_billing
from billing.chledger import LedgerQueries, LedgerRepair, LedgerSink
from billing.ledger import debit_id
from billing.rating import rate_call
from billing.reports import read_export
from billing.store import LedgerStore
from cdr.store.queries import CdrStore
from proxy.infra.clickhouse.backend import ChdbBackend
from proxy.infra.clickhouse.migrate import migrate
from proxy.infra.config import Config
from proxy.infra.kafka import ensure_topics
from tests.harness.billing import cdr_leg
from tests.harness.broker import produce, settings_for, unique_topic

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@a.test", "bob@b.test"
NUMBER = "4930123456"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("billing-api")
    backend = ChdbBackend(data / "clickhouse")
    migrate(backend)
    tokens = open_store(data)
    made = {"admin": tokens.create("admin")[1], "alice": tokens.create("account", ALICE)[1],
            "bob": tokens.create("account", BOB)[1]}
    app = create_app(CdrStore(backend), tokens)
    api = mount_billing(app, backend, tokens, Config(), data)
    client = TestClient(app)
    yield client, made, api, backend, data
    client.close()
    api.close()
    tokens.close()
    backend.close()


def call(env, method, path, who="admin", **kwargs):
    client, tokens, *_ = env
    headers = kwargs.pop("headers", {})
    if who:
        headers["Authorization"] = f"Bearer {tokens[who]}"
    return client.request(method, path, headers=headers, **kwargs)


def test_accounts_rates_topups_and_isolation(env):
    assert call(env, "POST", "/v1/accounts", json={"id": ALICE}).status_code == 201
    assert call(env, "POST", "/v1/accounts", json={"id": BOB, "kind": "postpaid", "credit_limit": "50"}).status_code == 201
    assert call(env, "POST", "/v1/accounts", json={"id": ALICE}).status_code == 409
    assert call(env, "POST", "/v1/accounts", who="alice", json={"id": "x@y"}).status_code == 403
    assert call(env, "GET", "/v1/accounts", who=None).status_code == 401
    # rates CRUD and assignment
    assert call(env, "POST", "/v1/rate-plans", json={"name": "retail"}).status_code == 201
    rate = call(env, "POST", "/v1/rate-plans/retail/rates",
                json={"prefix": "49", "price_per_min": "0.60", "currency": "EUR", "first_increment": 1,
                      "next_increment": 1, "rounding": "up"})
    assert rate.status_code == 201 and rate.json()["price_per_min"] == "0.60"
    bad = call(env, "POST", "/v1/rate-plans/retail/rates", json={"prefix": "49", "price_per_min": "1e3", "currency": "EUR"})
    assert bad.status_code == 422
    assert call(env, "PUT", f"/v1/accounts/{ALICE}/plan", json={"plan": "retail"}).status_code == 200
    assert call(env, "GET", f"/v1/accounts/{ALICE}/rates", who="alice").json()["plan"] == "retail"
    assert "0.60" in call(env, "GET", "/v1/rate-plans/retail/export").text
    # top-ups: exactly once per key
    key = {"Idempotency-Key": "payment-001"}
    first = call(env, "POST", f"/v1/accounts/{ALICE}/topups", json={"amount": "10.50"}, headers=dict(key))
    assert first.status_code == 201 and first.json()["balance"] == "10.50"
    again = call(env, "POST", f"/v1/accounts/{ALICE}/topups", json={"amount": "10.50"}, headers=dict(key))
    assert again.status_code == 200 and again.json()["replayed"] and again.json()["balance"] == "10.50"
    assert again.json()["event"]["id"] == first.json()["event"]["id"]
    other = call(env, "POST", f"/v1/accounts/{ALICE}/topups", json={"amount": "99"}, headers=dict(key))
    assert other.status_code == 409
    assert call(env, "POST", f"/v1/accounts/{ALICE}/topups", json={"amount": "1"}).status_code == 422     # no key
    assert call(env, "POST", f"/v1/accounts/{ALICE}/topups", json={"amount": 1.5},
                headers={"Idempotency-Key": "float"}).status_code == 422                                 # not a string
    assert call(env, "POST", f"/v1/accounts/{ALICE}/topups", who="alice", json={"amount": "5"},
                headers={"Idempotency-Key": "self"}).status_code == 403
    adj = call(env, "POST", f"/v1/accounts/{ALICE}/adjustments", json={"amount": "-20"},
               headers={"Idempotency-Key": "too-much"})
    assert adj.status_code == 409                                                  # prepaid stays >= 0
    # balances: own account yes, another's is "not found"
    assert call(env, "GET", f"/v1/accounts/{ALICE}/balance", who="alice").json()["available"] == "10.50"
    assert call(env, "GET", f"/v1/accounts/{ALICE}/balance", who="bob").status_code == 404
    assert call(env, "GET", f"/v1/accounts/{BOB}/balance", who="bob").json()["available"] == "50"
    assert [a["id"] for a in call(env, "GET", "/v1/accounts", who="alice").json()["items"]] == [ALICE]
    blocked = call(env, "PATCH", f"/v1/accounts/{BOB}", json={"status": "blocked"})
    assert blocked.status_code == 200 and blocked.json()["status"] == "blocked"


@pytest.mark.clock
def test_history_reports_and_check(env):
    client, tokens, api, backend, data = env
    if call(env, "GET", f"/v1/accounts/{ALICE}").status_code == 404:
        test_accounts_rates_topups_and_isolation(env)
    plan = api.rates.get_plan("retail")
    # three answered calls: CDRs in ClickHouse, their debits in the ledger (as the service writes them)
    base = 1_793_491_200_000 + 3_600_000
    legs = [cdr_leg(f"api-call-{i}", ALICE, NUMBER, base + i * 60_000, base + i * 60_000 + 10_000 * (i + 1))
            for i in range(3)]
    CdrStore(backend).insert_legs(legs)
    from billing.ledger import LedgerEvent
    events = [LedgerEvent(id=debit_id(leg.cdr_id, 0), account=ALICE, kind="debit", currency="EUR",
                          amount=rate_call(plan, NUMBER, leg.answer_ms, leg.duration_ms).total,
                          ts_ms=leg.end_ms + 100, cdr_id=leg.cdr_id, leg=0, call_id=leg.call_id,
                          answer_ms=leg.answer_ms, duration_ms=leg.duration_ms, number=NUMBER, plan="retail",
                          prefix="49", gateway="gw-1", billed_s=leg.duration_ms // 1000) for leg in legs]
    api.store.append(events)
    repair = LedgerRepair(LedgerQueries(backend), api.store)
    assert repair.repair_once() >= 4                      # ClickHouse lacked them: copied from SQLite
    assert repair.repair_once() == 0
    # history, newest first, paged
    page = call(env, "GET", f"/v1/accounts/{ALICE}/ledger", who="alice", params={"limit": 2}).json()
    assert [e["kind"] for e in page["items"]] == ["debit", "debit"] and page["next_cursor"]
    rest = call(env, "GET", f"/v1/accounts/{ALICE}/ledger", who="alice",
                params={"limit": 10, "cursor": page["next_cursor"]}).json()
    assert [e["kind"] for e in rest["items"]] == ["debit", "topup"] and rest["next_cursor"] is None
    assert D(rest["items"][-1]["amount"]) == D("10.50")          # Decimal(18,6): "10.500000"
    assert call(env, "GET", f"/v1/accounts/{ALICE}/ledger", who="bob").status_code == 404
    # reports, streamed, exact
    total = sum((e.amount for e in events), D(0))
    for fmt in ("csv", "parquet", "xlsx"):
        r = call(env, "GET", f"/v1/accounts/{ALICE}/reports/statement", who="alice",
                 params={"format": fmt, "from": "2026-10", "to": "2026-11"})
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        frame = read_export(r.content, fmt)
        assert frame["balance"].iloc[-1] == D("10.50") - total, fmt
    gw = read_export(call(env, "GET", "/v1/reports/gateways", params={"month": "2026-11"}).content, "csv")
    assert list(gw["gateway"]) == ["gw-1"] and gw["cost"].iloc[0] == total
    assert call(env, "GET", "/v1/reports/gateways", who="alice").status_code == 403
    # reconciliation: equal, then a missing debit and a wrong one are listed
    check = call(env, "GET", "/v1/ledger/check", params={"from": "2026-11", "to": "2026-11"}).json()
    assert check["ok"], check
    (period,) = [p for p in check["periods"] if p["account"] == ALICE]
    assert D(period["rated"]) == D(period["debited"]) == total and period["cdr_legs"] == 3
    extra = cdr_leg("api-call-x", ALICE, NUMBER, base + 600_000, base + 660_000)
    CdrStore(backend).insert_legs([extra])
    check = call(env, "GET", "/v1/ledger/check", params={"from": "2026-11", "to": "2026-11"}).json()
    assert not check["ok"] and [d["kind"] for d in check["differences"]] == ["missing_debit"]
    assert check["differences"][0]["cdr_id"] == extra.cdr_id and check["differences"][0]["rated"] == "0.6000"


def test_ledger_sink_from_the_broker(env, broker):
    client, tokens, api, backend, data = env
    kafka = settings_for(broker)
    topic = unique_topic("ledger")
    asyncio.run(ensure_topics(kafka, {topic: 3}))
    queries = LedgerQueries(backend)
    store = LedgerStore(f"sqlite:///{data}/sink.sqlite")
    store.create_schema()
    from billing.ledger import AccountInfo, money_event
    acct = AccountInfo(id="sink@a.test")
    new = store.append([money_event(acct, "topup", D("0.000001"), f"k{i}", ts_ms=1_793_491_200_000 + i)
                        for i in range(25)])
    from billing.store import encode_event
    records = [(e.account.encode(), encode_event(e)) for e in store.unpublished(topic)]
    assert len(records) == 25
    asyncio.run(produce(kafka, topic, records + records[:10]))          # with duplicates

    async def run_sink():
        sink = LedgerSink(queries, kafka, topic=topic, group_id=unique_topic("g"), batch_ms=50, partitions=3)
        task = asyncio.create_task(sink.run())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sink.stats.received < 35:
            await asyncio.sleep(0.1)
        sink.stop()
        await task
        return sink.stats
    stats = asyncio.run(run_sink())
    assert stats.received == 35 and stats.rejected == 0
    history = queries.history("sink@a.test", limit=100)
    assert len(history) == 25 and {h["seq"] for h in history} == {e.seq for e in new}
    assert sum((h["amount"] for h in history), D(0)) == D("0.000025")
    store.close()
