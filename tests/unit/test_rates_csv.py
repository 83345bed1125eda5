"""Rates CSV (billing.rating.csvfile): a good file, a bad file reporting every bad line, round trips."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest

from billing.rating.csvfile import (
    COLUMNS,
    CsvImportError,
    parse_time_of_day,
    parse_weekdays,
    plan_import,
    write_rates,
)
from billing.rating.model import DAY, Rate, RatePlan, RatingError

HEADER = ",".join(COLUMNS)

GOOD = f"""\
# retail prices, 2025
{HEADER}
retail,49,Germany,0.05,,,,,,,,,,,,
retail,4930,Berlin peak,0.1,0.2,60,1,0,up,5,EUR,,,mon-fri,08:00,18:00
retail,4930,Berlin off-peak,0.05,0.2,60,1,0,up,5,EUR,,,mon-fri,18:00,08:00

retail,4930,Berlin weekend,0.02,0.2,60,1,0,up,5,eur,,,"sat,sun",,
retail,*,Rest of world,1.5,0,1,1,0,half_even,2,EUR,2025-01-01,2026-01-01T00:00+00:00,,,
wholesale,+33,France,0.012,0,6,6,30,down,6,EUR,,,,,24:00
"""


def test_a_good_file():
    result = plan_import(GOOD, existing={}, currency="EUR", timezone="Europe/Berlin")
    assert set(result.plans) == {"retail", "wholesale"} and result.created == ("retail", "wholesale")
    assert result.added == {"retail": 5, "wholesale": 1}
    retail = result.plans["retail"]
    assert retail.timezone == "Europe/Berlin" and retail.currency == "EUR"
    germany, peak, off, weekend, rest = retail.rates
    # empty cells take the Rate defaults and the default currency
    assert germany == Rate(prefix="49", name="Germany", price_per_min=D("0.05"), currency="EUR")
    assert peak == Rate(prefix="4930", name="Berlin peak", price_per_min=D("0.1"), connect_fee=D("0.2"),
                        first_increment=60, next_increment=1, min_seconds=0, rounding="up", decimals=5,
                        currency="EUR", weekdays=frozenset(range(5)), time_from=8 * 3600, time_to=18 * 3600)
    assert (off.time_from, off.time_to) == (18 * 3600, 8 * 3600)
    assert weekend.weekdays == frozenset({5, 6}) and weekend.currency == "EUR"
    assert (weekend.time_from, weekend.time_to) == (0, DAY)
    assert rest.prefix == "" and rest.rounding == "half_even"
    # a date without an offset is midnight in the plan's zone; with one it is as written
    assert rest.valid_from == datetime(2025, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    assert rest.valid_to == datetime(2026, 1, 1, tzinfo=timezone.utc)
    [france] = result.plans["wholesale"].rates
    assert (france.prefix, france.price_per_min, france.min_seconds, france.time_to) == ("33", D("0.012"), 30, DAY)
    assert isinstance(france.price_per_min, D) and str(france.price_per_min) == "0.012"


def test_export_then_import_gives_the_same_plans():
    plans = plan_import(GOOD, existing={}, timezone="Europe/Berlin").plans
    text = write_rates(plans.values())
    assert text.splitlines()[0] == HEADER
    again = plan_import(text, existing=plans, replace=True).plans
    assert again == plans
    assert write_rates(again.values()) == text


def test_a_bad_file_reports_every_bad_line_and_nothing_else():
    bad = f"""\
{HEADER}
retail,49,Germany,0.05,,,,,,,,,,,,
retail,4930,Berlin,0.1,0.2,60,1,0,ceil,5,EUR,,,mon-fri,08:00,18:00
retail,4931,x,1e-3,-1,0,1,,,11,EURO,,,,,
retail,4932,x,0.1,,,,,,,,2025-02-30,,mon-xyz,8,25:00
retail,4933,ok,0.1,,,,,,,,,,,,
retail,4934,short,0.1
,4935,no plan,0.1,,,,,,,,,,,,
retail,49,Germany again,0.06,,,,,,,,,,,,
retail,4936,dollars,0.1,,,,,,,USD,,,,,
retail,4937,time,0.1,,,,,,,,2025-02-01,2025-01-01,,10:00,10:00
retail,,empty,,,,,,,,,,,,,
"""
    with pytest.raises(CsvImportError) as info:
        plan_import(bad, existing={})
    assert str(info.value) == "9 bad line(s), nothing imported"
    assert info.value.errors == [
        "line 3: rounding 'ceil' must be one of up, down, half_up, half_even",
        "line 4: price_per_min '1e-3' is not a plain decimal number like 0.015; "
        "connect_fee '-1' is not a plain decimal number like 0.015; "
        "first_increment '0' is not a whole number from 1 to 86400; "
        "decimals '11' is not a whole number from 0 to 10; "
        "currency 'EURO' is not an ISO 4217 code like EUR",
        "line 5: valid_from '2025-02-30' is not an ISO date or date-time like 2025-01-31 "
        "or 2025-01-31T08:00+01:00; "
        "weekdays 'mon-xyz': use mon..sun, ranges and commas like mon-fri or sat,sun; "
        "time_from '8' is not a time of day HH:MM[:SS] from 00:00 to 23:59:59; "
        "time_to '25:00' is not a time of day HH:MM[:SS] from 00:00 to 24:00",
        "line 7: has 4 fields, the header has 16",
        "line 8: plan is empty",
        "line 9: rate 49 (Germany again) applies at the same time as line 2",
        "line 10: currency USD differs from EUR of line 2; a plan has one currency",
        "line 11: valid_from 2025-02-01T00:00:00+00:00 must be before valid_to 2025-01-01T00:00:00+00:00",
        "line 12: prefix is empty (use * for any number); price_per_min is empty",
    ]


@pytest.mark.parametrize("text,error", [
    ("", "line 1: no header line"),
    ("# only a comment\n", "line 1: no header line"),
    (f"{HEADER}\n", "line 1: the file has no rates"),
    ("plan,prefix,price,name\nr,49,1,x\n", "line 1: unknown column(s) price (known: plan,prefix,"),
    ("plan,prefix,prefix,price_per_min\n", "line 1: column(s) prefix given twice"),
    ("plan,prefix\nr,49\n", "line 1: missing column(s) price_per_min"),
    ("prefix,price_per_min\n49,1\n", "line 1: missing column(s) plan (or give the plan with --plan)"),
    ('plan,prefix,price_per_min\nr,49,"1\n', "line 2: malformed CSV: unexpected end of data"),
])
def test_bad_headers_and_files(text, error):
    with pytest.raises(CsvImportError) as info:
        plan_import(text, existing={})
    assert info.value.errors[0].startswith(error)


def test_the_plan_option():
    text = "prefix,price_per_min\n49,1\n33,2\n"
    result = plan_import(text, existing={}, plan="retail")
    assert [r.prefix for r in result.plans["retail"].rates] == ["49", "33"]
    mixed = "plan,prefix,price_per_min\nretail,49,1\nother,33,2\n,34,1\n"
    with pytest.raises(CsvImportError) as info:
        plan_import(mixed, existing={}, plan="retail")
    assert info.value.errors == ["line 3: plan 'other' is not the plan being imported (retail)"]


def test_adding_to_an_existing_plan_and_replacing_it():
    existing = {"retail": RatePlan("retail", [Rate(prefix="49", price_per_min=D("1"), currency="EUR",
                                                   name="Germany")], "Europe/Berlin")}
    added = plan_import("plan,prefix,price_per_min\nretail,33,2\n", existing=existing)
    assert [r.prefix for r in added.plans["retail"].rates] == ["49", "33"]
    assert added.plans["retail"].timezone == "Europe/Berlin" and added.created == ()

    clash = "plan,prefix,price_per_min\nretail,49,2\n"
    with pytest.raises(CsvImportError) as info:
        plan_import(clash, existing=existing)
    assert info.value.errors == [
        "line 2: rate 49 applies at the same time as rate 49 (Germany) already in plan retail "
        "(--replace replaces the plan's rates)"]
    replaced = plan_import(clash, existing=existing, replace=True, set_timezone="UTC")
    assert [r.price_per_min for r in replaced.plans["retail"].rates] == [D("2")]
    assert replaced.plans["retail"].timezone == "UTC"

    with pytest.raises(RatingError, match="plan retail exists with time zone Europe/Berlin; use --replace"):
        plan_import(clash, existing=existing, plan="retail", set_timezone="UTC")
    dollars = "plan,prefix,price_per_min,currency\nretail,1,2,USD\n"
    with pytest.raises(CsvImportError, match="bad line"):
        plan_import(dollars, existing=existing)


@pytest.mark.parametrize("text,days", [
    ("mon-fri", {0, 1, 2, 3, 4}), ("sat,sun", {5, 6}), ("Fri-Mon", {4, 5, 6, 0}),
    ("mon,wed-fri", {0, 2, 3, 4}), ("mon-sun", set()), ("", set()),
])
def test_weekdays(text, days):
    assert parse_weekdays(text) == frozenset(days)


def test_times_of_day():
    assert parse_time_of_day("08:00", "t") == 8 * 3600
    assert parse_time_of_day("8:30:15", "t") == 8 * 3600 + 30 * 60 + 15
    assert parse_time_of_day("24:00", "t", end=True) == DAY
    with pytest.raises(RatingError, match="from 00:00 to 23:59:59"):
        parse_time_of_day("24:00", "t")
    with pytest.raises(RatingError):
        parse_time_of_day("12:60", "t")
