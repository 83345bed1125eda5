"""The rate store (billing.rating.store) on SQLite: CRUD, plan rules, assignments, exact money."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest

from billing.rating.model import Rate, RatePlan, RatingError
from billing.rating.store import RatesStore
from proxy.infra.config import BillingSettings

UTC = timezone.utc


def rate(prefix="49", price="1", **kw) -> Rate:
    kw.setdefault("currency", "EUR")
    return Rate(prefix=prefix, price_per_min=D(price), **kw)


@pytest.fixture
def url(tmp_path):
    return BillingSettings().database_url(tmp_path / "data")


@pytest.fixture
def store(url):
    s = RatesStore(url)
    s.create_schema()
    yield s
    s.close()


def test_default_url_is_in_the_data_dir(tmp_path):
    assert BillingSettings().database_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/billing.sqlite"
    assert BillingSettings(db_url="postgresql://x/y").database_url(tmp_path) == "postgresql://x/y"


def test_bad_urls_are_one_line_errors(tmp_path):
    with pytest.raises(RatingError, match="invalid database URL"):
        RatesStore("not a url")
    with pytest.raises(RatingError, match="^billing database sqlite:.*: no such table: rates_change_log$"):
        RatesStore(BillingSettings().database_url(tmp_path)).version()


def test_plan_and_rate_crud(store):
    v0 = store.version()
    store.create_plan("retail", "Europe/Berlin")
    with pytest.raises(RatingError, match="plan retail already exists"):
        store.create_plan("retail")
    with pytest.raises(RatingError, match="time zone 'Mars/Base'"):
        store.create_plan("other", "Mars/Base")
    first = store.add_rate("retail", rate("49", "0.05", name="Germany"))
    cut = datetime(2025, 1, 1, 8, 30, tzinfo=UTC)
    second = store.add_rate("retail", rate("4930", "0.1", name="Berlin", connect_fee=D("0.2"),
                                           weekdays=frozenset({0, 4}), time_from=3600, time_to=7200,
                                           valid_from=cut))
    assert store.version() > v0
    assert [s.id for s in store.list_rates("retail")] == [first, second]
    got = store.get_rate(second)
    assert got.plan == "retail" and got.rate.valid_from == cut and got.rate.weekdays == frozenset({0, 4})

    store.update_rate(first, rate("49", "0.06", name="Germany"))
    assert store.get_rate(first).rate.price_per_min == D("0.06")
    with pytest.raises(RatingError, match="apply at the same time"):
        store.update_rate(second, rate("49", "0.07"))
    store.delete_rate(first)
    with pytest.raises(RatingError, match=f"rate {first} does not exist"):
        store.get_rate(first)
    with pytest.raises(RatingError, match=f"rate {first} does not exist"):
        store.delete_rate(first)

    plan = store.get_plan("retail")
    assert plan.timezone == "Europe/Berlin" and [r.name for r in plan.rates] == ["Berlin"]
    [info] = store.list_plans()
    assert (info.name, info.timezone, info.currency, info.rates, info.accounts) == \
        ("retail", "Europe/Berlin", "EUR", 1, 0)
    store.set_timezone("retail", "UTC")
    assert store.get_plan("retail").timezone == "UTC"
    assert store.delete_plan("retail") == 1
    assert store.list_plans() == []


def test_a_rate_breaking_the_plan_is_refused_and_nothing_changes(store):
    store.create_plan("retail")
    store.add_rate("retail", rate("49"))
    version = store.version()
    with pytest.raises(RatingError, match="apply at the same time"):
        store.add_rate("retail", rate("49", "2"))
    with pytest.raises(RatingError, match="several currencies"):
        store.add_rate("retail", rate("33", currency="USD"))
    with pytest.raises(RatingError, match="plan nope does not exist"):
        store.add_rate("nope", rate("49"))
    assert store.version() == version and len(store.get_plan("retail").rates) == 1


def test_money_is_stored_exactly_as_text(store, url):
    store.create_plan("p")
    tiny, big = D("0.000000000001"), D("999999999.999999999999")
    store.add_rate("p", rate("1", str(tiny), connect_fee=big))
    [r] = store.get_plan("p").rates
    assert r.price_per_min == tiny and r.connect_fee == big
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        price, fee, kind = db.execute(
            "select price_per_min, connect_fee, typeof(price_per_min) from rate").fetchone()
    assert (price, fee, kind) == ("0.000000000001", "999999999.999999999999", "text")


def test_assignments(store):
    store.create_plan("retail")
    store.create_plan("vip")
    store.add_rate("retail", rate())
    store.assign("alice@example.test", "retail")
    store.assign("bob@example.test", "retail")
    store.assign("bob@example.test", "vip")                     # reassigning replaces
    assert store.assignments() == {"alice@example.test": "retail", "bob@example.test": "vip"}
    assert store.assignments("vip") == {"bob@example.test": "vip"}
    assert store.plan_of("alice@example.test") == "retail" and store.plan_of("carol@x") is None
    assert store.plan_for("alice@example.test").name == "retail"
    assert store.plan_for("carol@x") is None
    assert store.plan_for("carol@x", default="vip").name == "vip"
    with pytest.raises(RatingError, match="plan nope does not exist"):
        store.assign("alice@example.test", "nope")
    with pytest.raises(RatingError, match="account '' must be"):
        store.assign("", "retail")
    with pytest.raises(RatingError, match="plan retail is assigned to 1 account"):
        store.delete_plan("retail")
    store.unassign("alice@example.test")
    with pytest.raises(RatingError, match="account alice@example.test has no plan"):
        store.unassign("alice@example.test")
    assert store.delete_plan("retail") == 1


def test_snapshot_and_put_plans(store):
    plans = {"a": RatePlan("a", [rate("49"), rate("33", "2")], "Europe/Paris"), "b": RatePlan("b", [])}
    version = store.version()
    store.put_plans(plans, expect_version=version)
    store.assign("alice@x", "a")
    snap = store.snapshot()
    assert snap.version == store.version() > version
    assert snap.plans == plans and snap.accounts == {"alice@x": "a"}
    assert snap.plan_for("alice@x") == plans["a"]
    # replacing keeps the plan (and its assignments), swaps every rate
    store.put_plans({"a": RatePlan("a", [rate("1")], "UTC")})
    assert store.get_plan("a") == RatePlan("a", [rate("1")], "UTC")
    assert store.assignments() == {"alice@x": "a"}
    with pytest.raises(RatingError, match="the rates changed while the file was being checked"):
        store.put_plans(plans, expect_version=version)
    assert store.get_plans(["a", "nope"]).keys() == {"a"}
