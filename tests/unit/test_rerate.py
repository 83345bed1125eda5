"""Rerating (billing/rerate.py through billing/application.py) and time travel, on the SQL
ledger -- the path the CLI takes when no billing service runs (the service runs the same
command: tests/integration/test_billing_service.py).  Fixed instants: no test reads today."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest

from billing.application import BillingApplication, StoredLedger
from billing.errors import LedgerError
from billing.ledger.accounts import build_account
from billing.ledger.events import debit_id
from billing.ledger.fold import fold
from billing.ledger.store import LedgerStore
from billing.rating.model import Rate, RatePlan, RatesSnapshot, rate_call, to_epoch_ms
from billing.rating.store import RatesStore
from billing.rerate import Leg, RerateRun, legs_of, plan_rerate, pricer, rerate_id
from proxy.contract.ledger import LedgerEvent
from proxy.infra import clock

ALICE, BOB = "alice@a.test", "bob@b.test"
T0 = to_epoch_ms(datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc))      # calls answered from here
MIN = 60_000
PERIOD = (T0 - MIN, T0 + 60 * MIN)


def rate(price: str, prefix: str = "49", **kw) -> Rate:
    return Rate(prefix=prefix, price_per_min=D(price), currency="EUR", first_increment=1, next_increment=1,
                decimals=4, **kw)


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    """A ledger with two accounts, a plan, a top-up each and three debited calls."""
    now = [T0 - 30 * MIN]                                   # top-ups before the calls, reruns after
    monkeypatch.setattr(clock, "now_ms", lambda: now[0])
    url = f"sqlite:///{tmp_path}/billing.sqlite"
    store, rates = LedgerStore(url), RatesStore(url)
    store.create_schema()
    rates.create_schema()
    rates.put_plans({"retail": RatePlan("retail", [rate("0.60")])})
    for account in (ALICE, BOB):
        store.put_account(build_account(account, {"kind": "prepaid"}, existing=None, now_ms=T0 - 3600_000,
                                        default_currency="EUR"), create=True)
        rates.assign(account, "retail")
    app = BillingApplication(StoredLedger(store, rates), default_currency="EUR")
    for account in (ALICE, BOB):
        asyncio.run(app.money(account, "topup", "10", f"pay-{account}"))
    now[0] = T0 + 2 * 3600_000
    plan = rates.get_plan("retail")
    calls = [(ALICE, "c1", 0, 90_000), (ALICE, "c2", 5, 30_000), (BOB, "c3", 10, 61_500)]
    store.append([_debit(plan, account, cdr, T0 + minute * MIN, ms) for account, cdr, minute, ms in calls])
    yield app, store, rates
    store.close()
    rates.close()


def _debit(plan: RatePlan, account: str, cdr: str, answer_ms: int, duration_ms: int) -> LedgerEvent:
    charge = rate_call(plan, "4930123", answer_ms, duration_ms)
    return LedgerEvent(id=debit_id(cdr, 0), account=account, kind="debit", amount=charge.total, currency="EUR",
                       ts_ms=answer_ms + duration_ms + 1000, call_id=f"call-{cdr}", cdr_id=cdr, leg=0,
                       answer_ms=answer_ms, number=charge.number, plan=plan.name, prefix=charge.prefix,
                       rate_name=charge.name, duration_ms=duration_ms, billed_s=charge.billed_seconds)


def rerate(app, **kw):
    return asyncio.run(app.rerate(*PERIOD, **kw))


def balances(store: LedgerStore) -> dict[str, D]:
    state = fold(store.iter_events())
    return {a: state.book(a).balance for a in (ALICE, BOB)}


def set_price(rates: RatesStore, price: str) -> None:
    rates.put_plans({"retail": RatePlan("retail", [rate(price)])})


def test_rerate_books_corrections_and_rerating_back_restores_every_balance(ledger):
    app, store, rates = ledger
    original = balances(store)
    # 0.60/min: 90 s = 0.9000, 30 s = 0.3000, 61.5 s (62 s billed) = 0.6200
    assert original == {ALICE: D("8.8000"), BOB: D("9.3800")}
    assert rerate(app)["changed"] == 0                       # nothing changed: nothing booked

    set_price(rates, "1.20")
    run = rerate(app, who="ops")
    assert (run["calls"], run["changed"], run["unrated"]) == (3, 3, 0)
    assert (run["total_before"], run["total_after"], run["delta"]) == ("1.8200", "3.6400", "1.8200")
    assert run["accounts"] == [
        {"account": ALICE, "currency": "EUR", "calls": 2, "changed": 2, "unrated": 0, "before": "1.2000",
         "after": "2.4000", "delta": "1.2000"},
        {"account": BOB, "currency": "EUR", "calls": 1, "changed": 1, "unrated": 0, "before": "0.6200",
         "after": "1.2400", "delta": "0.6200"}]
    assert balances(store) == {ALICE: D("7.6000"), BOB: D("8.7600")}
    corrections = store.events(kinds=["rerate"])
    assert [(e.cdr_id, e.amount, e.key) for e in corrections] == [
        ("c1", D("0.9000"), run["id"]), ("c2", D("0.3000"), run["id"]), ("c3", D("0.6200"), run["id"])]
    assert corrections[0].note == "0.9000 -> 1.8000: plan retail, rate 49, 90 s billed"
    assert all(e.answer_ms and e.number == "4930123" for e in corrections)
    debits_before = store.events(kinds=["debit"])

    assert rerate(app)["changed"] == 0                       # the same rerate again: no second change
    assert balances(store) == {ALICE: D("7.6000"), BOB: D("8.7600")}

    set_price(rates, "0.60")
    back = rerate(app)
    assert back["changed"] == 3 and back["delta"] == "-1.8200"
    assert balances(store) == original                       # exactly, to the last digit
    assert store.events(kinds=["debit"]) == debits_before    # never edited: only compensated
    set_price(rates, "1.20")                                  # A -> B -> A -> B: a third, distinct correction
    assert rerate(app)["changed"] == 3
    assert len({e.id for e in store.events(kinds=["rerate"])}) == 9
    assert balances(store) == {ALICE: D("7.6000"), BOB: D("8.7600")}
    assert sorted(r.changed for r in store.runs()) == [0, 0, 3, 3, 3]           # every run recorded


def test_dry_run_changes_nothing_and_records_no_run(ledger):
    app, store, rates = ledger
    set_price(rates, "1.20")
    before = store.max_seq()
    dry = rerate(app, dry_run=True)
    assert dry["dry_run"] and dry["changed"] == 3 and dry["delta"] == "1.8200"
    assert [c["after"] for c in dry["changes"]] == ["1.8000", "0.6000", "1.2400"]
    assert store.max_seq() == before and store.runs() == []


def test_filters_plan_override_and_the_run_record(ledger):
    app, store, rates = ledger
    rates.put_plans({"promo": RatePlan("promo", [rate("0.30")])})
    run = rerate(app, account=BOB, plan="promo", who="cli:ops")
    assert (run["calls"], run["changed"], run["delta"]) == (1, 1, "-0.3100")
    assert balances(store)[ALICE] == D("8.8000")             # not in the filter
    stored = store.get_run(run["id"])
    assert stored is not None and (stored.who, stored.account, stored.plan) == ("cli:ops", BOB, "promo")
    assert stored.to_dict()["accounts"] == run["accounts"] and stored.created_ms == T0 + 2 * 3600_000
    with pytest.raises(LedgerError, match="plan nope"):
        rerate(app, plan="nope")
    with pytest.raises(LedgerError, match="does not exist"):
        rerate(app, account="carol@c.test")
    with pytest.raises(LedgerError, match="period"):
        asyncio.run(app.rerate(5, 5))


def test_a_leg_that_cannot_be_priced_keeps_its_cost(ledger):
    app, store, rates = ledger
    rates.put_plans({"retail": RatePlan("retail", [rate("0.60", prefix="33")])})   # no rate for 49 any more
    run = rerate(app)
    assert (run["calls"], run["changed"], run["unrated"], run["delta"]) == (3, 0, 3, "0.0000")


def test_correction_ids_follow_the_leg_and_its_result():
    debit = LedgerEvent(id="d", account=ALICE, kind="debit", amount=D("1"), currency="EUR", ts_ms=1, cdr_id="c",
                        leg=0, answer_ms=T0, number="49", duration_ms=60_000, seq=1)
    plan = RatePlan("p", [rate("2")])
    run = RerateRun(id="r", who="", created_ms=2, from_ms=0, to_ms=T0 * 2)
    events, _ = plan_rerate(run, [Leg(debit)], pricer(RatesSnapshot(0, {"p": plan}, {ALICE: "p"}), {}))
    assert [(e.amount, e.id) for e in events] == [(D("1.0000"), rerate_id("c", 0, 0, D("2")))]
    assert rerate_id("c", 0, 0, D("2.0000")) == rerate_id("c", 0, 0, D("2"))     # one cost, one id
    assert rerate_id("c", 0, 1, D("2")) != rerate_id("c", 0, 0, D("2"))
    assert legs_of([debit], events)[0].cost == D("2.0000")


def test_time_travel_at_several_instants(ledger):
    app, store, rates = ledger
    topup_ms = store.events(kinds=["topup"], account=ALICE)[0].ts_ms
    c1, c2 = (e.ts_ms for e in store.events(kinds=["debit"], account=ALICE))
    store.append([LedgerEvent(id="res", account=ALICE, kind="reservation", amount=D("0.5"), currency="EUR",
                              ts_ms=c2 + 10, call_id="live", paid_ms=MIN, answer_ms=c2, number="4930")])
    at = lambda ms: asyncio.run(app.balance_at(ALICE, ms))          # noqa: E731
    assert at(topup_ms - 1)["balance"] == "0" and at(topup_ms - 1)["events"] == []
    assert at(topup_ms)["balance"] == "10"
    assert (at(c1)["balance"], at(c1 - 1)["balance"]) == ("9.1000", "10")
    mid = at(c2 + 10)
    assert (mid["balance"], mid["reserved"], mid["available"]) == ("8.8000", "0.5", "8.3000")
    assert [c["call_id"] for c in mid["active_calls"]] == ["live"]
    assert [e["kind"] for e in mid["events"]] == ["reservation", "debit", "debit", "topup"]
    set_price(rates, "1.20")
    rerate(app)
    now = clock.now_ms()
    assert at(now)["balance"] == "7.6000" and at(c2 + 10)["balance"] == "8.8000"   # the past stays the past
    assert at(now)["at_ms"] == now


def test_cli_rerate_list_show_export_and_account_at(tmp_path, monkeypatch):
    """`sipledger rerate ...` and `account show --at` with no billing service: the CLI takes the
    ledger's lock like `account topup` (billing/client.py)."""
    import json

    from typer.testing import CliRunner

    from api.cli import app
    from billing.reports.export import read_export

    def cli(*args, code=0):
        result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), *args])
        assert result.exit_code == code, (args, result.output)
        return result.output

    monkeypatch.setattr(clock, "now_ms", lambda: T0 - 30 * MIN)
    cli("account", "add", ALICE, "--prepaid")
    cli("account", "topup", ALICE, "10", "--key", "pay")
    url = f"sqlite:///{tmp_path}/billing.sqlite"
    with LedgerStore(url) as store, RatesStore(url) as rates:
        rates.put_plans({"retail": RatePlan("retail", [rate("0.60")])})
        rates.assign(ALICE, "retail")
        store.append([_debit(rates.get_plan("retail"), ALICE, "c1", T0, 90_000)])
        set_price(rates, "1.20")
    monkeypatch.setattr(clock, "now_ms", lambda: T0 + 2 * 3600_000)
    period = ["--from", "2026-03-02T09:00:00Z", "--to", "2026-03-02T11:00:00Z"]
    cli("rerate", "--from", "2026-03-02", code=2)                            # no --to
    dry = json.loads(cli("rerate", *period, "--dry-run", "--json"))
    assert (dry["changed"], dry["delta"], dry["changes"][0]["after"]) == (1, "0.9000", "1.8000")
    assert "changed 1" in cli("rerate", *period)
    runs = json.loads(cli("rerate", "list", "--json"))
    assert len(runs) == 1 and runs[0]["who"].startswith("cli") and runs[0]["delta"] == "0.9000"
    assert "delta 0.9000" in cli("rerate", "show", runs[0]["id"])
    shown = json.loads(cli("rerate", "show", runs[0]["id"], "--calls", "--json"))
    assert [(e["cdr_id"], e["amount"], e["key"]) for e in shown["corrections"]] == [("c1", "0.9000", runs[0]["id"])]
    out = tmp_path / "run.parquet"
    cli("rerate", "show", runs[0]["id"], "--format", "parquet", "-o", str(out))
    frame = read_export(out, "parquet")
    assert list(frame["account"]) == [ALICE] and list(frame["delta"]) == [D("0.9000")]
    cli("rerate", "show", "nope", code=1)
    assert json.loads(cli("account", "show", ALICE, "--json"))["balance"] == "8.2000"
    past = json.loads(cli("account", "show", ALICE, "--at", str(T0), "--json"))
    assert past["balance"] == "10" and [e["kind"] for e in past["events"]] == ["topup"]
