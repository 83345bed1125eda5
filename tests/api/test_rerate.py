"""``/v1/rerate`` and ``/v1/accounts/{id}/balance?at=T`` over a real chdb store and
billing database, and ``ledger check`` after a rerate: corrections count in a leg's
cost, and the ClickHouse copy of the ledger folds to the same balances (a hole or an
extra event in it is one ``archive_balance`` line per account).  Fixed instants only."""
from __future__ import annotations

from decimal import Decimal as D

import pytest

from billing.ledger.accounts import AccountInfo
from billing.ledger.clickhouse import LedgerQueries, LedgerRepair
from billing.ledger.events import debit_id, money_event
from billing.rating.model import Rate, RatePlan, rate_call
from billing.reports.export import read_export
from cdr.store.queries import CdrStore
from proxy.contract.ledger import LedgerEvent
from tests.harness.api import ALICE
from tests.harness.billing import cdr_leg

pytestmark = pytest.mark.integration

NUMBER = "4930123456"
DEC = 1_796_083_200_000                 # 2026-12-01T00:00:00Z


def rate(price: str) -> Rate:
    return Rate(prefix="49", price_per_min=D(price), currency="EUR", first_increment=1, next_increment=1,
                decimals=4)


def test_rerate_routes_time_travel_and_the_check(billing_api):
    env = billing_api
    rates, store = env.state.rates_store, env.state.ledger_store
    rates.put_plans({"dec": RatePlan("dec", [rate("0.60")])})
    rates.assign(ALICE, "dec")
    info = AccountInfo(id=ALICE, created_ms=DEC, updated_ms=DEC)
    store.put_account(info, create=True)
    legs = [cdr_leg(f"rr-{i}", ALICE, NUMBER, DEC + 3_600_000 * (i + 1), DEC + 3_600_000 * (i + 1) + 90_000)
            for i in range(2)]
    CdrStore(env.backend).insert_legs(legs)
    plan = rates.get_plan("dec")
    store.append([money_event(info, "topup", D("10"), "pay", ts_ms=DEC + 60_000)] + [
        LedgerEvent(id=debit_id(leg.cdr_id, 0), account=ALICE, kind="debit", currency="EUR",
                    amount=rate_call(plan, NUMBER, leg.answer_ms, leg.duration_ms).total, ts_ms=leg.end_ms + 100,
                    cdr_id=leg.cdr_id, leg=0, call_id=leg.call_id, answer_ms=leg.answer_ms,
                    duration_ms=leg.duration_ms, number=NUMBER, plan="dec", prefix="49", billed_s=90)
        for leg in legs])

    # time travel: the account's own token, or an admin; not another account
    at = lambda ms, who="alice": env.get(f"/v1/accounts/{ALICE}/balance", who, at=str(ms))   # noqa: E731
    assert at(DEC).json()["balance"] == "0" and at(DEC).json()["events"] == []
    assert at(DEC + 60_000).json()["balance"] == "10"
    first_call = legs[0].end_ms + 100
    past = at(first_call, "admin").json()
    assert (past["balance"], past["at_ms"], [e["kind"] for e in past["events"]]) == ("9.1000", first_call,
                                                                                     ["debit", "topup"])
    assert at(DEC, "bob").status_code == 403
    assert at("yesterday").status_code == 422
    assert env.get(f"/v1/accounts/{ALICE}/balance", "alice").json()["at_ms"] is None

    # a rerate: dry run first, then booked and recorded, then a repeat changes nothing
    rates.put_plans({"dec": RatePlan("dec", [rate("1.20")])})
    period = {"from": "2026-12-01", "to": "2026-12-01"}
    dry = env.call("POST", "/v1/rerate", json={**period, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["changed"] == 2 and store.runs() == []
    done = env.call("POST", "/v1/rerate", json=period)
    assert done.status_code == 201, done.text
    run = done.json()
    assert (run["changed"], run["delta"]) == (2, "1.8000") and run["who"].startswith("api:")
    assert [c["after"] for c in run["changes"]] == ["1.8000", "1.8000"]
    assert env.call("POST", "/v1/rerate", json=period).json()["changed"] == 0
    assert env.call("POST", "/v1/rerate", json={**period, "plan": "nope"}).status_code == 404
    assert env.call("POST", "/v1/rerate", json={"from": "2026-12-02", "to": "2026-12-01"}).status_code == 422
    listed = env.get("/v1/rerate").json()["items"]
    assert [r["changed"] for r in listed] == [0, 2] or [r["changed"] for r in listed] == [2, 0]
    shown = env.get(f"/v1/rerate/{run['id']}").json()
    assert shown["accounts"] == run["accounts"] and shown["changes"] == []
    assert env.get("/v1/rerate/00000000-0000-0000-0000-000000000000").status_code == 404
    for fmt in ("csv", "xlsx"):
        frame = read_export(env.get(f"/v1/rerate/{run['id']}/export", format=fmt).content, fmt)
        assert list(frame["account"]) == [ALICE] and list(frame["delta"]) == [D("1.8000")], fmt
    assert env.get(f"/v1/accounts/{ALICE}/balance").json()["balance"] == "6.4000"
    assert at(first_call).json()["balance"] == "9.1000"                # the past stays as it was

    # ledger check: the corrected cost equals the rerated one; the copy folds to the same balances
    queries = LedgerQueries(env.backend)
    LedgerRepair(queries, store).repair_once()
    check = env.get("/v1/ledger/check", **period, account=ALICE).json()
    assert check["ok"], check
    (month,) = check["periods"]
    assert month["rated"] == month["debited"] == "3.6000"
    extra = money_event(info, "adjustment", D("5"), "only-in-clickhouse", ts_ms=DEC + 99)
    queries.insert([msgspec_replace(extra, seq=store.max_seq() + 7)])
    check = env.get("/v1/ledger/check", **period, account=ALICE).json()
    (line,) = check["differences"]
    assert line["kind"] == "archive_balance" and line["account"] == ALICE
    assert (D(line["rated"]), D(line["debited"])) == (D("6.4"), D("11.4")) and "ClickHouse copy" in line["detail"]


def msgspec_replace(event: LedgerEvent, **changes) -> LedgerEvent:
    import msgspec
    return msgspec.structs.replace(event, **changes)
