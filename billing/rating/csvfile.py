"""Rates as CSV: import (all or nothing, every bad line reported) and export.  Pure: text in, text out.

Columns (header line required, any order; only ``prefix`` and ``price_per_min``
are required, and ``plan`` unless the import names the plan):

=============== =====================================================================
plan            rate plan name (letters, digits, ``_ . -``)
prefix          destination prefix, digits (a leading ``+`` is dropped); ``*`` = any number
name            destination name (free text)
price_per_min   price per minute, a plain decimal: ``0.1``, ``0.0125`` (no exponent, no comma)
connect_fee     charged once per answered call with usage; default 0
first_increment seconds billed for the first increment; default 60
next_increment  seconds of each further increment; default 60
min_seconds     minimum billable time in seconds; default 0
rounding        up | down | half_up | half_even; default half_up
decimals        decimals the cost is rounded to, 0-10; default 4
currency        ISO 4217 code; default the ``[billing] currency``
valid_from      ISO date or date-time, inclusive; no offset = the plan's time zone; empty = always
valid_to        ISO date or date-time, exclusive; empty = forever
weekdays        ``mon-fri``, ``sat,sun``, ``mon,wed-fri``; empty = every day
time_from       ``HH:MM[:SS]`` local time of day, inclusive; empty = 00:00
time_to         ``HH:MM[:SS]`` exclusive, ``24:00`` = end of day; empty = 24:00;
                earlier than time_from wraps over midnight (``20:00`` - ``08:00``)
=============== =====================================================================

Blank lines and lines starting with ``#`` are skipped.  A period applies when
the instant's own weekday and time of day (in the plan's zone) match.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from .model import (
    DAY,
    INT_LIMITS,
    ROUNDINGS,
    WEEKDAYS,
    Rate,
    RatePlan,
    RatingError,
    Rounding,
    check_currency,
    check_plan_name,
    check_prefix,
    check_timezone,
    describe_rate,
    find_overlaps,
    format_time_of_day,
    format_weekdays,
)

__all__ = [
    "COLUMNS", "REQUIRED", "CsvImportError", "ImportPlan", "plan_import", "write_rates",
    "parse_decimal", "parse_weekdays", "format_weekdays", "parse_time_of_day", "format_time_of_day",
    "parse_instant", "format_instant",
]

COLUMNS = ("plan", "prefix", "name", "price_per_min", "connect_fee", "first_increment",
           "next_increment", "min_seconds", "rounding", "decimals", "currency", "valid_from",
           "valid_to", "weekdays", "time_from", "time_to")
REQUIRED = ("prefix", "price_per_min")

_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_INT = re.compile(r"^[0-9]{1,9}$")
_TIME = re.compile(r"^([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?$")


class CsvImportError(RatingError):
    """A file that was not imported; ``errors`` has one "line N: reason" per bad line."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(f"{len(errors)} bad line(s), nothing imported")


@dataclass(frozen=True)
class ImportPlan:
    """What an import would write: each plan touched, complete (kept rates included)."""
    plans: dict[str, RatePlan]
    added: dict[str, int]             # plan -> rates from the file
    created: tuple[str, ...]          # plans that did not exist


# -- text forms (shared with the CLI and the REST API) ---------------------------------------

def parse_decimal(text: str, what: str) -> Decimal:
    if not _DECIMAL.match(text):
        raise RatingError(f"{what} {text!r} is not a plain decimal number like 0.015")
    return Decimal(text)


def _parse_int(text: str, what: str) -> int:
    low, high = INT_LIMITS[what]
    if not _INT.match(text) or not low <= int(text) <= high:
        raise RatingError(f"{what} {text!r} is not a whole number from {low} to {high}")
    return int(text)


def _int_parser(what: str) -> Callable[[str], int]:
    return lambda text: _parse_int(text, what)


def parse_weekdays(text: str) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``fri-mon`` (wraps); empty = every day (empty set)."""
    days: set[int] = set()
    for item in (part.strip().lower() for part in text.split(",")):
        if not item and not text.strip():
            continue
        ends = [e.strip() for e in item.split("-")]
        if len(ends) > 2 or not all(e in WEEKDAYS for e in ends):
            raise RatingError(f"weekdays {text!r}: use mon..sun, ranges and commas like mon-fri or sat,sun")
        first, last = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset() if len(days) == 7 else frozenset(days)


def parse_time_of_day(text: str, what: str, *, end: bool = False) -> int:
    """``HH:MM[:SS]`` -> seconds after midnight; ``24:00`` only as an end."""
    m = _TIME.match(text)
    if m:
        h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if mi < 60 and s < 60 and (h < 24 or (end and (h, mi, s) == (24, 0, 0))):
            return h * 3600 + mi * 60 + s
    limit = "24:00" if end else "23:59:59"
    raise RatingError(f"{what} {text!r} is not a time of day HH:MM[:SS] from 00:00 to {limit}")


def parse_instant(text: str, what: str, zone: ZoneInfo) -> datetime:
    """ISO date or date-time; without an offset it is local time in ``zone``."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RatingError(f"{what} {text!r} is not an ISO date or date-time like 2025-01-31 "
                          "or 2025-01-31T08:00+01:00") from None
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


def format_instant(value: datetime, zone: ZoneInfo) -> str:
    local = value.astimezone(zone)
    return local.isoformat(timespec="seconds" if local.microsecond == 0 else "microseconds")


# -- import ---------------------------------------------------------------------------------

def plan_import(text: str, *, existing: Mapping[str, RatePlan], plan: str | None = None,
                replace: bool = False, currency: str = "EUR", timezone: str = "UTC",
                set_timezone: str | None = None) -> ImportPlan:
    """Check a whole CSV file and work out the plans it leads to; nothing is written.

    ``existing`` are the stored plans (by name); their rates are kept and the
    file's added unless ``replace``, which replaces the rates of every plan the
    file names.  ``plan`` names the plan for rows whose plan cell is empty (a
    row naming another plan is an error).  New plans get ``set_timezone`` or
    else ``timezone``; ``set_timezone`` changes an existing plan only with
    ``replace``.  Raises CsvImportError listing every bad line, or RatingError
    for a bad argument.
    """
    if plan is not None:
        check_plan_name(plan)
    check_currency(currency)
    check_timezone(timezone)
    if set_timezone is not None:
        check_timezone(set_timezone)

    def zone_name(name: str) -> str:
        old = existing.get(name)
        if old is not None and not replace:
            return old.timezone
        return set_timezone or (old.timezone if old is not None else timezone)

    errors: dict[int, list[str]] = {}
    rows: list[tuple[int, str, Rate]] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [f.strip().lower() for f in fields]
                problem = _check_header(header, plan)
                if problem:
                    raise CsvImportError([f"line {line}: {problem}"])
                continue
            if len(fields) != len(header):
                errors.setdefault(line, []).append(
                    f"has {len(fields)} fields, the header has {len(header)}")
                continue
            cells = {name: value.strip() for name, value in zip(header, fields)}
            row_plan, rate, reasons = _row(cells, plan, currency, zone_name)
            if rate is None:                      # then ``reasons`` says why
                errors.setdefault(line, []).extend(reasons)
            else:
                rows.append((line, row_plan, rate))
    except csv.Error as exc:
        errors.setdefault(reader.line_num, []).append(f"malformed CSV: {exc}")
    if header is None:
        raise CsvImportError(["line 1: no header line (expected columns: " + ",".join(COLUMNS) + ")"])
    if not rows and not errors:
        raise CsvImportError([f"line {reader.line_num or 1}: the file has no rates"])

    # plan-level rules: one currency per plan, no two rates applicable at one instant
    by_plan: dict[str, list[tuple[int, Rate]]] = {}
    for line, name, rate in rows:
        by_plan.setdefault(name, []).append((line, rate))
    if set_timezone is not None and not replace:
        for name in by_plan:
            old = existing.get(name)
            if old is not None and old.timezone != set_timezone:
                raise RatingError(f"plan {name} exists with time zone {old.timezone}; "
                                  "use --replace to change it")
    plans: dict[str, RatePlan] = {}
    for name, new in by_plan.items():
        old = existing.get(name)
        kept = list(old.rates) if old is not None and not replace else []
        sources: list[int | None] = [None] * len(kept) + [line for line, _ in new]
        combined = kept + [rate for _, rate in new]
        want = kept[0].currency if kept else new[0][1].currency
        first_line = None if kept else new[0][0]
        for line, rate in new:
            if rate.currency != want:
                origin = f"line {first_line}" if first_line else f"plan {name}"
                errors.setdefault(line, []).append(
                    f"currency {rate.currency} differs from {want} of {origin}; a plan has one currency")
        for i, j in find_overlaps(combined):
            source = sources[j]
            assert source is not None         # kept rates were a valid plan already
            other = (f"line {sources[i]}" if sources[i] is not None else
                     f"rate {describe_rate(combined[i])} already in plan {name} "
                     "(--replace replaces the plan's rates)")
            errors.setdefault(source, []).append(
                f"rate {describe_rate(combined[j])} applies at the same time as {other}")
        if not errors:
            try:
                plans[name] = RatePlan(name, combined, zone_name(name))
            except RatingError as exc:           # not expected: the checks above cover the plan rules
                errors.setdefault(new[0][0], []).append(str(exc))
    if errors:
        raise CsvImportError([f"line {line}: {'; '.join(reasons)}" for line, reasons in sorted(errors.items())])
    return ImportPlan(plans=plans, added={name: len(new) for name, new in by_plan.items()},
                      created=tuple(name for name in by_plan if name not in existing))


def _check_header(header: list[str], plan: str | None) -> str | None:
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        return f"unknown column(s) {', '.join(unknown)} (known: {','.join(COLUMNS)})"
    doubled = sorted({h for h in header if header.count(h) > 1})
    if doubled:
        return f"column(s) {', '.join(doubled)} given twice"
    required = REQUIRED if plan is not None else ("plan",) + REQUIRED
    missing = [c for c in required if c not in header]
    if missing:
        hint = " (or give the plan with --plan)" if "plan" in missing else ""
        return f"missing column(s) {', '.join(missing)}{hint}"
    return None


def _row(cells: dict[str, str], plan: str | None, currency: str,
         zone_name: Callable[[str], str]) -> tuple[str, Rate | None, list[str]]:
    """One data row -> (plan, rate, []) or (plan, None, every reason it is bad)."""
    reasons: list[str] = []
    name = cells.get("plan", "")
    if plan is not None and name and name != plan:
        reasons.append(f"plan {name!r} is not the plan being imported ({plan})")
    name = name or plan or ""
    zone: ZoneInfo | None = None
    if not name:
        reasons.append("plan is empty")
    else:
        try:
            check_plan_name(name)
            zone = ZoneInfo(zone_name(name))
        except RatingError as exc:
            reasons.append(str(exc))

    parsers: dict[str, Callable[[str], object]] = {
        "prefix": _parse_prefix,
        "name": str,
        "price_per_min": lambda t: parse_decimal(t, "price_per_min"),
        "connect_fee": lambda t: parse_decimal(t, "connect_fee"),
        **{column: _int_parser(column) for column in INT_LIMITS},
        "rounding": _parse_rounding,
        "currency": lambda t: check_currency(t.upper()),
        "weekdays": parse_weekdays,
        "time_from": lambda t: parse_time_of_day(t, "time_from"),
        "time_to": lambda t: parse_time_of_day(t, "time_to", end=True),
    }
    if zone is not None:                      # without the plan's zone the valid_* cells are skipped below
        parsers["valid_from"] = lambda t: parse_instant(t, "valid_from", zone)
        parsers["valid_to"] = lambda t: parse_instant(t, "valid_to", zone)
    values: dict[str, Any] = {}               # Rate's keyword arguments; Rate checks them
    for column in COLUMNS[1:]:
        text = cells.get(column, "")
        if text == "":
            if column in REQUIRED:
                reasons.append(f"{column} is empty" + (" (use * for any number)" if column == "prefix" else ""))
            continue
        if column.startswith("valid_") and zone is None:
            continue                          # needs the plan's zone; the plan is already reported
        try:
            values[column] = parsers[column](text)
        except RatingError as exc:
            reasons.append(str(exc))
    if reasons:
        return name, None, reasons
    values.setdefault("currency", currency)
    try:
        return name, Rate(**values), []           # the model's own cross-field rules
    except RatingError as exc:
        return name, None, [str(exc)]


def _parse_prefix(text: str) -> str:
    if text == "*":
        return ""
    return check_prefix(text[1:] if text.startswith("+") else text)


def _parse_rounding(text: str) -> Rounding:
    value = text.lower()
    if value not in ROUNDINGS:
        raise RatingError(f"rounding {text!r} must be one of {', '.join(ROUNDINGS)}")
    return cast(Rounding, value)


# -- export ---------------------------------------------------------------------------------

def write_rates(plans: Iterable[RatePlan]) -> str:
    """The plans as CSV with every column filled in (re-importable as is)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for plan in plans:
        zone = ZoneInfo(plan.timezone)
        for r in sorted(plan.rates, key=_sort_key):
            writer.writerow([
                plan.name, r.prefix or "*", r.name, _plain(r.price_per_min), _plain(r.connect_fee),
                r.first_increment, r.next_increment, r.min_seconds, r.rounding, r.decimals, r.currency,
                "" if r.valid_from is None else format_instant(r.valid_from, zone),
                "" if r.valid_to is None else format_instant(r.valid_to, zone),
                format_weekdays(r.weekdays),
                "" if (r.time_from, r.time_to) == (0, DAY) else format_time_of_day(r.time_from),
                "" if (r.time_from, r.time_to) == (0, DAY) else format_time_of_day(r.time_to),
            ])
    return out.getvalue()


_MIN = datetime.min.replace(tzinfo=dt_timezone.utc)


def _sort_key(rate: Rate):
    return (rate.prefix, rate.valid_from or _MIN, sorted(rate.weekdays), rate.time_from, rate.time_to)


def _plain(value: Decimal) -> str:
    return format(value, "f")
