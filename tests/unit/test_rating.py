"""Rating (billing.rating.model): increments, rounding, prefixes, validity, periods, splits, max_duration."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.rating.model import (
    DAY,
    NoRateError,
    Rate,
    RatePlan,
    RatesSnapshot,
    RatingError,
    first_cost,
    match,
    max_duration,
    normalize_number,
    number_from_uri,
    rate_call,
    round_money,
    to_epoch_ms,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_NOON = to_epoch_ms(datetime(2025, 1, 6, 12, 0, tzinfo=UTC))      # a Monday


def rate(prefix="49", price="1", **kw) -> Rate:
    kw.setdefault("currency", "EUR")
    return Rate(prefix=prefix, price_per_min=D(price), **kw)


def plan(*rates: Rate, tz="UTC") -> RatePlan:
    return RatePlan("test", rates, tz)


def at(text: str, zone=UTC) -> int:
    value = datetime.fromisoformat(text)
    return to_epoch_ms(value if value.tzinfo else value.replace(tzinfo=zone))


def cost(p: RatePlan, seconds: int | float, number="491234", start=MONDAY_NOON) -> D:
    return rate_call(p, number, start, int(seconds * 1000)).total


# -- the worked example ------------------------------------------------------------------

def test_worked_example_85_seconds():
    """An 85 s call, first increment 60 s then 1 s, connect fee 0.2, 0.1 per minute,
    rounded up to 5 decimals.

    By hand:
      increments: 60 s (the first) + 25 x 1 s = 85 s billed (85 s is covered exactly)
      usage cost: 0.1 per min x 85 s / 60 = 8.5 / 60 = 0.141666...
      total:      0.2 + 0.141666... = 0.341666...  -> rounded up to 5 decimals = 0.34167

    The breakdown rounds the part first (0.141666... -> 0.14167) and adds the
    connect fee (0.2 + 0.14167 = 0.34167): the same result, and the shown
    numbers add up exactly.
    """
    p = plan(rate("4930", "0.1", name="Berlin", connect_fee=D("0.2"), first_increment=60,
                  next_increment=1, rounding="up", decimals=5))
    charge = rate_call(p, "+49 30 123456", MONDAY_NOON, 85_000)

    assert charge.total == D("0.34167")
    assert charge.total.as_tuple().exponent == -5
    assert charge.currency == "EUR" and charge.connect_fee == D("0.2")
    assert charge.billed_seconds == 85
    [part] = charge.parts
    assert part.increments == ((1, 60), (25, 1))
    assert part.billed_seconds == 85 and part.usage_ms == 85_000
    assert part.price_per_min == D("0.1") and part.cost == D("0.14167")
    assert charge.connect_fee + part.cost == charge.total
    # the exact amount rounded once gives the same answer
    exact = D("0.2") + D("0.1") * 85 / 60
    assert round_money(exact, 5, "up") == charge.total
    text = "\n".join(charge.explain())
    assert "1x60 s + 25x1 s" in text and "0.14166666..." in text and "= 0.34167 EUR" in text


# -- increments -----------------------------------------------------------------------------

@pytest.mark.parametrize("first,nxt,seconds,billed", [
    (60, 60, 1, 60), (60, 60, 60, 60), (60, 60, 61, 120), (60, 60, 119, 120), (60, 60, 121, 180),
    (30, 6, 1, 30), (30, 6, 30, 30), (30, 6, 31, 36), (30, 6, 36, 36), (30, 6, 37, 42),
    (1, 1, 1, 1), (1, 1, 85, 85), (1, 1, 85.001, 86), (1, 1, 0.001, 1),
    (60, 1, 59, 60), (60, 1, 61, 61), (60, 1, 60.5, 61),
])
def test_increments(first, nxt, seconds, billed):
    p = plan(rate(price="0.6", first_increment=first, next_increment=nxt, decimals=4))
    charge = rate_call(p, "491", MONDAY_NOON, round(seconds * 1000))
    assert charge.billed_seconds == billed
    assert charge.total == D("0.01") * billed           # 0.6/min = 0.01/s, exact


def test_minimum_billable_time():
    p = plan(rate(price="0.6", first_increment=30, next_increment=6, min_seconds=90, decimals=2))
    assert rate_call(p, "491", MONDAY_NOON, 10_000).billed_seconds == 90      # 30 + 10 x 6
    assert rate_call(p, "491", MONDAY_NOON, 91_000).billed_seconds == 96
    assert cost(p, 10) == D("0.90")


def test_zero_duration_costs_nothing_not_even_the_connect_fee():
    p = plan(rate(connect_fee=D("0.5"), decimals=3))
    charge = rate_call(p, "491", MONDAY_NOON, 0)
    assert charge.total == D("0.000") and charge.parts == () and charge.connect_fee == 0


# -- rounding -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,decimals,method,expected", [
    ("0.0125", 3, "up", "0.013"), ("0.0125", 3, "down", "0.012"),
    ("0.0125", 3, "half_up", "0.013"), ("0.0125", 3, "half_even", "0.012"),
    ("0.0135", 3, "half_even", "0.014"), ("0.01251", 3, "half_even", "0.013"),
    ("0.0121", 3, "up", "0.013"), ("0.0129", 3, "down", "0.012"), ("0.0124", 3, "half_up", "0.012"),
    ("5", 2, "up", "5.00"), ("0", 4, "up", "0.0000"), ("2.5", 0, "half_even", "2"),
    ("-0.0125", 3, "up", "-0.013"), ("-0.0125", 3, "half_up", "-0.013"),
])
def test_round_money(value, decimals, method, expected):
    result = round_money(D(value), decimals, method)
    assert result == D(expected) and str(result) == expected
    assert result.as_tuple().exponent == -decimals


@pytest.mark.parametrize("method,expected", [
    ("up", "0.017"), ("down", "0.016"), ("half_up", "0.017"), ("half_even", "0.017"),
])
def test_rounding_methods_on_a_repeating_fraction(method, expected):
    # 1 per minute for 1 s = 1/60 = 0.016666...
    p = plan(rate(price="1", first_increment=1, next_increment=1, rounding=method, decimals=3))
    assert cost(p, 1) == D(expected)


@pytest.mark.parametrize("method,expected", [
    ("up", "0.13"), ("down", "0.12"), ("half_up", "0.13"), ("half_even", "0.12"),
])
def test_rounding_methods_on_an_exact_half(method, expected):
    # 0.25 per minute for 30 s = 0.125 exactly
    p = plan(rate(price="0.25", first_increment=30, next_increment=30, rounding=method, decimals=2))
    assert cost(p, 30) == D(expected)


# -- prefixes -------------------------------------------------------------------------------

def test_longest_prefix_wins():
    p = plan(rate("", "9", name="any"), rate("49", "1", name="de"), rate("4930", "2", name="berlin"),
             rate("493012", "3", name="berlin-12"))
    assert match(p, "4930123456", MONDAY_NOON).name == "berlin-12"
    assert match(p, "4930999", MONDAY_NOON).name == "berlin"
    assert match(p, "+49 (89) 123-45", MONDAY_NOON).name == "de"
    assert match(p, "33123", MONDAY_NOON).name == "any"
    assert match(p, "alice", MONDAY_NOON).name == "any"
    assert match(plan(rate("49")), "33123", MONDAY_NOON) is None
    assert match(p, "4930", MONDAY_NOON).name == "berlin"           # prefix equal to the number


def test_no_rate_is_a_clear_error():
    with pytest.raises(NoRateError, match=r"plan test has no rate for 33123 at 2025-01-06T12:00:00.000\+00:00"):
        rate_call(plan(rate("49")), "33123", MONDAY_NOON, 1000)
    with pytest.raises(NoRateError):
        max_duration(plan(rate("49")), "33123", MONDAY_NOON, D("10"))


def test_numbers_and_uris():
    assert normalize_number("+49 (30) 123-45.6") == "4930123456"
    assert normalize_number("0049301") == "0049301"
    assert number_from_uri("sip:+4930123@example.test;user=phone") == "4930123"
    assert number_from_uri("<sips:0049301@gw:5061;transport=tls>") == "0049301"
    assert number_from_uri("tel:+49-30-123;phone-context=x") == "4930123"
    assert number_from_uri("sip:alice@example.test") == "alice"
    assert number_from_uri("sip:%2B4930@h") == "4930"


# -- validity -------------------------------------------------------------------------------

def test_validity_window_falls_back_to_a_shorter_prefix():
    new_year = datetime(2025, 1, 1, tzinfo=UTC)
    p = plan(rate("49", "1", name="de"),
             rate("4930", "2", name="promo", valid_to=new_year),
             rate("4930", "3", name="berlin-2025", valid_from=new_year, valid_to=new_year + timedelta(days=31)))
    assert match(p, "4930", at("2024-12-31T23:59:59")).name == "promo"
    assert match(p, "4930", at("2025-01-01T00:00:00")).name == "berlin-2025"
    assert match(p, "4930", at("2025-02-01T00:00:00")).name == "de"      # valid_to is exclusive
    assert match(p, "4930", new_year).name == "berlin-2025"              # datetime accepted too


def test_a_call_crossing_a_validity_boundary_is_split():
    change = datetime(2025, 1, 1, tzinfo=UTC)
    p = plan(rate("49", "0.6", first_increment=1, next_increment=1, valid_to=change, decimals=4),
             rate("49", "1.2", first_increment=1, next_increment=1, valid_from=change, decimals=4))
    charge = rate_call(p, "491", at("2024-12-31T23:59:30"), 60_000)
    assert [(x.billed_seconds, x.cost) for x in charge.parts] == [(30, D("0.3000")), (30, D("0.6000"))]
    assert charge.total == D("0.9000")


def test_a_new_tariff_version_inside_a_call_prices_each_segment():
    """A plan's next version is its rates valid from a date (rates import with valid_from /
    valid_to).  A call across the change: 60/60 increments, 23:59:00 + 150 s.

    By hand: old version (0.10/min, fee 0.05, half_up 4 dp) from 23:59:00: one 60 s
    increment = 0.1000; new version (0.25/min, fee 0.30) from 00:00:00: 90 s left, two
    60 s increments = 120 s = 0.5000.  Connect fee and rounding are the opening
    rate's: 0.05 + 0.1000 + 0.5000 = 0.6500."""
    change = datetime(2026, 1, 1, tzinfo=UTC)
    p = plan(rate("49", "0.10", name="v1", connect_fee=D("0.05"), valid_to=change),
             rate("49", "0.25", name="v2", connect_fee=D("0.30"), valid_from=change))
    charge = rate_call(p, "4930", at("2025-12-31T23:59:00"), 150_000)
    assert [(x.name, x.start_ms, x.usage_ms, x.billed_seconds, x.cost) for x in charge.parts] == [
        ("v1", at("2025-12-31T23:59:00"), 60_000, 60, D("0.1000")),
        ("v2", at("2026-01-01T00:00:00"), 90_000, 120, D("0.5000"))]
    assert (charge.connect_fee, charge.total, charge.name) == (D("0.05"), D("0.6500"), "v1")


def test_an_increment_straddling_a_validity_change_is_billed_whole_at_its_start_rate():
    """60/60 increments, answered 23:59:30, 100 s: the first increment (23:59:30-00:00:30)
    starts under v1 and is billed whole at 0.60/min = 0.6000; v2 (1.20/min) takes over
    where it ends: 40 s left -> one 60 s increment = 1.2000.  Total 1.8000 -- never more
    increments than the same call without the change (2)."""
    change = datetime(2026, 1, 1, tzinfo=UTC)
    p = plan(rate("49", "0.60", name="v1", valid_to=change), rate("49", "1.20", name="v2", valid_from=change))
    charge = rate_call(p, "491", at("2025-12-31T23:59:30"), 100_000)
    assert [(x.name, x.usage_ms, x.billed_seconds, x.cost) for x in charge.parts] == [
        ("v1", 60_000, 60, D("0.6000")), ("v2", 40_000, 60, D("1.2000"))]
    assert charge.total == D("1.8000")


def test_validity_changes_of_other_prefixes_split_a_call_too():
    """A longer prefix that starts (or stops) being valid mid-call takes over (or hands back
    to the shorter prefix) at that instant: 1/1 increments, 0.60 -> 0.30 -> 0.60 per min.

    By hand: 30 s at 49 (0.60) = 0.3000, 60 s at 4930 promo (0.30) = 0.3000, 30 s at 49 = 0.3000."""
    start = at("2026-02-01T11:59:30")
    promo = rate("4930", "0.30", name="promo", first_increment=1, next_increment=1,
                 valid_from=datetime(2026, 2, 1, 12, 0, tzinfo=UTC), valid_to=datetime(2026, 2, 1, 12, 1, tzinfo=UTC))
    p = plan(rate("49", "0.60", name="de", first_increment=1, next_increment=1), promo)
    charge = rate_call(p, "4930123", start, 120_000)
    assert [(x.name, x.billed_seconds, x.cost) for x in charge.parts] == [
        ("de", 30, D("0.3000")), ("promo", 60, D("0.3000")), ("de", 30, D("0.3000"))]
    assert charge.total == D("0.9000")
    # max_duration walks the same segments: 0.75 pays 30 s + 60 s (0.60) + 15 s more at 0.60/min
    assert max_duration(p, "4930123", start, D("0.75")) == 105
    assert max_duration(p, "4930123", start, D("0.7499")) == 104


def test_gap_mid_call_is_an_error_for_rating_and_a_stop_for_max_duration():
    end = datetime(2025, 1, 6, 12, 1, tzinfo=UTC)
    p = plan(rate("49", "0.6", first_increment=1, next_increment=1, valid_to=end, decimals=2))
    with pytest.raises(NoRateError, match="60 s into the call"):
        rate_call(p, "491", MONDAY_NOON, 61_000)
    assert max_duration(p, "491", MONDAY_NOON, D("100")) == 60


# -- periods --------------------------------------------------------------------------------

def peak_offpeak(tz="Europe/Berlin", first=60, nxt=1) -> RatePlan:
    return plan(
        rate("4930", "0.1", name="peak", weekdays=frozenset(range(5)), time_from=8 * 3600,
             time_to=18 * 3600, first_increment=first, next_increment=nxt, rounding="up", decimals=5,
             connect_fee=D("0.2")),
        rate("4930", "0.05", name="offpeak", weekdays=frozenset(range(5)), time_from=18 * 3600,
             time_to=8 * 3600, first_increment=first, next_increment=nxt, rounding="up", decimals=5,
             connect_fee=D("0.3")),
        rate("4930", "0.02", name="weekend", weekdays=frozenset({5, 6}), first_increment=first,
             next_increment=nxt, rounding="up", decimals=5, connect_fee=D("0.4")),
        tz=tz)


def test_periods_are_read_in_the_plans_time_zone():
    p = peak_offpeak()
    assert match(p, "4930", at("2025-01-06T07:59:59", BERLIN)).name == "offpeak"
    assert match(p, "4930", at("2025-01-06T08:00:00", BERLIN)).name == "peak"
    assert match(p, "4930", at("2025-01-06T07:30:00")).name == "peak"          # 08:30 in Berlin
    assert match(p, "4930", at("2025-01-06T17:59:59", BERLIN)).name == "peak"
    assert match(p, "4930", at("2025-01-06T18:00:00", BERLIN)).name == "offpeak"
    assert match(p, "4930", at("2025-01-11T12:00:00", BERLIN)).name == "weekend"
    # the wrap-around window uses the instant's own weekday: Saturday 03:00 is weekend
    assert match(p, "4930", at("2025-01-11T03:00:00", BERLIN)).name == "weekend"
    assert match(p, "4930", at("2025-01-10T23:00:00", BERLIN)).name == "offpeak"   # Friday night


def test_a_call_crossing_a_period_boundary_is_split():
    """17:59:30 + 85 s with 60/1 increments: the first increment (60 s) starts in
    peak and is billed whole at peak; off-peak takes over where it ends (18:00:30)
    for the remaining 25 x 1 s.  Connect fee and rounding are the opening rate's.

    By hand: peak 60 s x 0.1/60 = 0.1; off-peak 25 s x 0.05/60 = 0.0208333.. -> up 0.02084;
    total 0.2 + 0.10000 + 0.02084 = 0.32084."""
    p = peak_offpeak()
    start = at("2025-01-06T17:59:30", BERLIN)
    charge = rate_call(p, "4930123", start, 85_000)
    peak, off = charge.parts
    assert (peak.name, peak.start_ms, peak.usage_ms, peak.billed_seconds, peak.increments, peak.cost) == \
        ("peak", start, 60_000, 60, ((1, 60),), D("0.10000"))
    assert (off.name, off.start_ms, off.usage_ms, off.billed_seconds, off.increments, off.cost) == \
        ("offpeak", start + 60_000, 25_000, 25, ((25, 1),), D("0.02084"))
    assert charge.connect_fee == D("0.2") and charge.total == D("0.32084")
    assert charge.name == "peak"


def test_increments_are_cut_at_boundaries_when_they_fit():
    # 1/1 increments: the split lands exactly on 18:00:00
    p = peak_offpeak(first=1, nxt=1)
    start = at("2025-01-06T17:59:30", BERLIN)
    charge = rate_call(p, "4930123", start, 90_000)
    assert [(x.name, x.usage_ms, x.billed_seconds) for x in charge.parts] == \
        [("peak", 30_000, 30), ("offpeak", 60_000, 60)]
    assert [x.start_ms for x in charge.parts] == [start, at("2025-01-06T18:00:00", BERLIN)]


def test_friday_night_into_the_weekend_and_back():
    p = peak_offpeak(first=60, nxt=60)
    start = at("2025-01-10T23:58:00", BERLIN)            # Friday
    charge = rate_call(p, "4930123", start, 4 * 60_000)
    assert [(x.name, x.billed_seconds) for x in charge.parts] == [("offpeak", 120), ("weekend", 120)]
    assert sum(x.usage_ms for x in charge.parts) == 4 * 60_000


def test_period_boundaries_follow_daylight_saving_time():
    # 30 March 2025: Berlin jumps from 02:00 (+01:00) to 03:00 (+02:00)
    p = plan(rate("49", "0.6", name="night", time_from=22 * 3600, time_to=6 * 3600,
                  first_increment=1, next_increment=1, decimals=2),
             rate("49", "1.2", name="day", time_from=6 * 3600, time_to=22 * 3600,
                  first_increment=1, next_increment=1, decimals=2), tz="Europe/Berlin")
    start = at("2025-03-30T01:00:00", BERLIN)                       # 00:00 UTC
    charge = rate_call(p, "491", start, 5 * 3600_000)               # until 07:00 local (+02:00)
    night, day = charge.parts
    assert night.name == "night" and night.billed_seconds == 4 * 3600   # 01:00..06:00 local is 4 h
    assert day.start_ms == at("2025-03-30T06:00:00", BERLIN) == at("2025-03-30T04:00:00")
    assert day.billed_seconds == 3600


def test_overlapping_rates_are_refused():
    with pytest.raises(RatingError, match=r"rates 49 \(a\) \[mon-fri 08:00-18:00\] and 49 \(b\) "
                                          r"\[fri,sat 17:00-20:00\] apply at the same time"):
        plan(rate(name="a", weekdays=frozenset(range(5)), time_from=8 * 3600, time_to=18 * 3600),
             rate(name="b", weekdays=frozenset({4, 5}), time_from=17 * 3600, time_to=20 * 3600))
    with pytest.raises(RatingError, match="apply at the same time"):
        plan(rate(name="a"), rate(name="b", valid_from=datetime(2025, 1, 1, tzinfo=UTC)))
    with pytest.raises(RatingError, match="apply at the same time"):       # wrap-around windows
        plan(rate(name="a", time_from=20 * 3600, time_to=8 * 3600),
             rate(name="b", time_from=7 * 3600, time_to=9 * 3600))
    # touching windows and validity ranges do not overlap
    plan(rate(name="a", time_from=20 * 3600, time_to=8 * 3600),
         rate(name="b", time_from=8 * 3600, time_to=20 * 3600))
    cut = datetime(2025, 1, 1, tzinfo=UTC)
    plan(rate(name="a", valid_to=cut), rate(name="b", valid_from=cut))


def test_a_plan_has_one_currency():
    with pytest.raises(RatingError, match=r"several currencies \(EUR, USD\)"):
        plan(rate("49"), rate("33", currency="USD"))


@pytest.mark.parametrize("kwargs,message", [
    ({"price": "-1"}, "price_per_min -1 must be a number from 0"),
    ({"price": "NaN"}, "price_per_min NaN must be"),
    ({"price": "0.0000000000001"}, "more than 12 decimals"),
    ({"first_increment": 0}, "first_increment must be a whole number from 1 to 86400"),
    ({"next_increment": True}, "next_increment must be a whole number"),
    ({"rounding": "ceil"}, "rounding 'ceil' must be one of up, down, half_up, half_even"),
    ({"decimals": 11}, "decimals must be a whole number from 0 to 10"),
    ({"currency": "eur"}, "currency 'eur' is not an ISO 4217 code"),
    ({"prefix": "49a"}, "prefix '49a' must be up to 32 digits"),
    ({"valid_from": datetime(2025, 1, 1)}, "valid_from must be a date-time with a time zone"),
    ({"valid_from": datetime(2025, 1, 2, tzinfo=UTC), "valid_to": datetime(2025, 1, 1, tzinfo=UTC)},
     "must be before valid_to"),
    ({"weekdays": frozenset({7})}, "weekdays must be numbers 0"),
    ({"time_from": 3600, "time_to": 3600}, "time_from equals time_to"),
    ({"time_to": DAY + 1}, "time_to must be a whole number from 0 to 86400"),
])
def test_rate_validation(kwargs, message):
    prefix = kwargs.pop("prefix", "49")
    price = kwargs.pop("price", "1")
    with pytest.raises(RatingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rate(prefix, price, **kwargs)


def test_floats_are_refused_everywhere():
    with pytest.raises(RatingError, match="price_per_min must be a Decimal, not float"):
        Rate(prefix="49", price_per_min=0.1, currency="EUR")
    with pytest.raises(RatingError, match="credit must be a finite Decimal"):
        max_duration(plan(rate()), "49", MONDAY_NOON, 1.0)
    with pytest.raises(RatingError, match="has no time zone"):
        match(plan(rate()), "49", datetime(2025, 1, 1))


def test_json_keeps_amounts_exact():
    charge = rate_call(plan(rate(price="0.1", first_increment=1, next_increment=1, decimals=5)),
                       "491", MONDAY_NOON, 85_000)
    doc = msgspec.json.decode(msgspec.json.encode(charge))
    assert doc["total"] == "0.14167" and doc["parts"][0]["price_per_min"] == "0.1"
    # and a rate read from JSON (the REST API) gets the same validation
    parsed = msgspec.json.decode(b'{"prefix":"49","price_per_min":"0.1","currency":"EUR"}', type=Rate)
    assert parsed.price_per_min == D("0.1")
    with pytest.raises(msgspec.ValidationError, match="currency"):
        msgspec.json.decode(b'{"prefix":"49","price_per_min":"0.1","currency":"euro"}', type=Rate)


def test_snapshot_finds_an_accounts_plan():
    p = plan(rate())
    snap = RatesSnapshot(version=3, plans={"test": p}, accounts={"alice@x": "test"})
    assert snap.plan_for("alice@x") is p
    assert snap.plan_for("bob@x") is None
    assert snap.plan_for("bob@x", default="test") is p


# -- max_duration ---------------------------------------------------------------------------

def test_max_duration_worked_example():
    p = plan(rate("4930", "0.1", connect_fee=D("0.2"), first_increment=60, next_increment=1,
                  rounding="up", decimals=5))
    assert max_duration(p, "4930", MONDAY_NOON, D("0.34167")) == 85
    assert max_duration(p, "4930", MONDAY_NOON, D("0.34166")) == 84
    assert max_duration(p, "4930", MONDAY_NOON, D("0.3")) == 60       # 0.2 + one 60 s increment
    assert max_duration(p, "4930", MONDAY_NOON, D("0.29999")) == 0    # not even the first increment
    assert max_duration(p, "4930", MONDAY_NOON, D("0")) == 0
    assert max_duration(p, "4930", MONDAY_NOON, D("-1")) == 0
    assert max_duration(p, "4930", MONDAY_NOON, D("100")) == 59_880   # (100 - 0.2) / 0.1 minutes
    assert max_duration(p, "4930", MONDAY_NOON, D("100"), limit=10_800) == 10_800


def test_max_duration_of_a_free_rate_is_the_limit():
    p = plan(rate(price="0"))
    assert max_duration(p, "49", MONDAY_NOON, D("0"), limit=3600) == 3600


def test_max_duration_across_periods():
    p = peak_offpeak()
    start = at("2025-01-06T17:59:30", BERLIN)
    # 0.2 + 0.1 (peak, first 60 s) leaves 0.7 for off-peak at 0.05/min = 14 min
    assert max_duration(p, "4930", start, D("1")) == 60 + 14 * 60
    assert rate_call(p, "4930", start, 900_000).total == D("1.00000")


def test_max_duration_with_a_minimum():
    p = plan(rate(price="0.6", first_increment=1, next_increment=1, min_seconds=60, decimals=2))
    assert max_duration(p, "49", MONDAY_NOON, D("0.59")) == 0           # 60 s minimum costs 0.60
    assert max_duration(p, "49", MONDAY_NOON, D("0.60")) == 60
    assert max_duration(p, "49", MONDAY_NOON, D("0.61")) == 61


# -- properties -----------------------------------------------------------------------------

ROUNDING = st.sampled_from(["up", "down", "half_up", "half_even"])
PRICE = st.decimals(min_value=0, max_value=5, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def plans(draw):
    """One or two periods (peak/off-peak at a random hour, in a random zone) with random terms."""
    def terms():
        return dict(price_per_min=draw(PRICE), connect_fee=draw(PRICE) / 10,
                    first_increment=draw(st.sampled_from([1, 6, 30, 60, 90])),
                    next_increment=draw(st.sampled_from([1, 6, 30, 60])),
                    min_seconds=draw(st.sampled_from([0, 0, 10, 120])),
                    rounding=draw(ROUNDING), decimals=draw(st.integers(0, 6)), currency="EUR")
    tz = draw(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]))
    if draw(st.booleans()):
        return RatePlan("p", [Rate(prefix="49", **terms())], tz)
    a, b = sorted(draw(st.lists(st.integers(0, 95), min_size=2, max_size=2, unique=True)))
    return RatePlan("p", [Rate(prefix="49", time_from=a * 900, time_to=b * 900, **terms()),
                          Rate(prefix="49", time_from=b * 900, time_to=a * 900, **terms())], tz)


START = st.integers(at("2025-01-01T00:00:00"), at("2025-12-31T00:00:00"))
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(p=plans(), start=START, a=st.integers(0, 4 * 3600_000), b=st.integers(0, 4 * 3600_000))
def test_cost_is_monotonic_non_negative_and_exactly_rounded(p, start, a, b):
    short, long = sorted((a, b))
    c1, c2 = rate_call(p, "4912", start, short), rate_call(p, "4912", start, long)
    assert isinstance(c1.total, D) and isinstance(c2.total, D)
    assert D(0) <= c1.total <= c2.total
    for c in (c1, c2):
        assert c.total.as_tuple().exponent == -c.decimals
        assert sum(x.usage_ms for x in c.parts) == c.duration_ms
        assert sum(x.billed_seconds for x in c.parts) == c.billed_seconds >= c.duration_ms / 1000
        for part in c.parts:
            assert part.cost.as_tuple().exponent == -part.decimals
        if c.parts:     # the breakdown adds up
            assert round_money(c.connect_fee + sum(x.cost for x in c.parts), c.decimals, c.rounding) == c.total


@FAST
@given(p=plans(), start=START, credit=st.decimals(min_value=0, max_value=20, places=3))
def test_max_duration_round_trip(p, start, credit):
    limit = 6 * 3600
    d = max_duration(p, "4912", start, credit, limit=limit)
    assert 0 <= d <= limit
    assert rate_call(p, "4912", start, d * 1000).total <= credit
    if d < limit:
        # one increment more: the one starting at d (any usage at all when d == 0)
        longer = (d + match(p, "4912", start + d * 1000).next_increment) * 1000 if d else 1
        assert rate_call(p, "4912", start, longer).total > credit


@FAST
@given(p=plans(), start=START)
def test_first_cost_is_the_cost_of_the_first_increment(p, start):
    assert first_cost(p, "4912", start) == rate_call(p, "4912", start, 1).total
