"""Rating: what a call costs, and how long a credit lets a call last.  Pure: no I/O, no clock.

Model
-----
A ``Rate`` prices calls to numbers starting with ``prefix`` ("" = any number):
price per minute, connect fee, first / next increment (s), minimum billable
time (s), rounding (method + decimals), currency, validity ``[valid_from,
valid_to)`` and a period: weekdays (empty = every day) and a time-of-day window
``[time_from, time_to)`` in seconds after local midnight (``time_from >
time_to`` wraps over midnight: 20:00-08:00).  A ``RatePlan`` is a named set of
rates in one currency and one IANA time zone, the zone its periods are read in.

Matching (``match``)
--------------------
Among the rates *applicable at that instant* (valid, weekday and time of day of
the instant in the plan's zone) the longest prefix wins, so a rate outside its
validity or period falls back to a shorter prefix.  Two rates with the same
prefix may never apply at the same instant: ``RatePlan`` refuses such an
overlap, so there is no hidden weight or tie-break.  Numbers are normalised
by ``normalize_number`` (leading "+" and visual separators dropped; "00" is
*not* rewritten: write prefixes the way numbers are dialled).

Increments and period splits (CGRateS-like)
-------------------------------------------
* The usage (``duration_ms`` from the answer) is covered by increments laid
  from the answer onwards: one ``first_increment``, then ``next_increment``
  each, until the usage -- but at least ``min_seconds`` -- is covered.  A
  started increment is billed whole (85.001 s at 60+1 s bills 86 s).
* Each increment is sized and priced by the rate applicable at the instant the
  increment *starts*.  An increment straddling a period boundary is billed
  whole at the rate of the period it started in, and the next period's part
  begins where that increment ends (CGRateS rounds a timespan up to its
  increment and trims the overlapped start of the next timespan the same way).
  So a call is never billed for more increments than an unsplit call, and
  each increment has exactly one price.
* Consecutive increments under one rate form a ``ChargePart``: usage, billed
  seconds, the increments, price per minute, cost.
* Connect fee, minimum billable time and the total's rounding come from the
  *opening* rate (the one applicable at the answer instant).

Money
-----
Decimal only, never float; the arithmetic is exact integer/rational maths.
A part costs ``price_per_min * billed_seconds / 60`` rounded by *its* rate's
rule; the total is ``connect_fee + sum(part costs)`` rounded by the opening
rate's rule.  So a breakdown always adds up exactly to its total; for a call
in one period whose connect fee has no more decimals than the rate this equals
rounding the exact amount once.  A call with no usage (``duration_ms == 0``)
costs 0: no increment, no connect fee.

``max_duration(plan, number, at, credit)`` walks the very same increments and
returns the end of the last one the credit pays for, so
``cost(d) <= credit < cost(d + next increment)`` for the returned ``d``.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Literal, get_args
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

__all__ = [
    "Rounding", "ROUNDINGS", "WEEKDAYS", "DAY", "MAX_DECIMALS", "INT_LIMITS", "RatingError", "NoRateError",
    "Rate", "RatePlan", "ChargePart", "Charge", "RatesSnapshot",
    "match", "rate_call", "first_cost", "max_duration", "round_money", "find_overlaps", "rates_overlap",
    "describe_rate", "format_weekdays", "format_time_of_day", "normalize_number", "number_from_uri", "to_epoch_ms",
    "check_currency", "check_timezone", "check_plan_name", "check_prefix",
]

Rounding = Literal["up", "down", "half_up", "half_even"]
ROUNDINGS: tuple[str, ...] = get_args(Rounding)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")   # index = datetime.weekday()
DAY = 86400
MAX_DECIMALS = 10
MAX_MONEY_DECIMALS = 12          # a price or fee may be written with at most this many decimals
MAX_MONEY = Decimal(10) ** 9
MAX_INCREMENT = DAY
# the whole-number fields of a Rate and their allowed ranges
INT_LIMITS = {"first_increment": (1, MAX_INCREMENT), "next_increment": (1, MAX_INCREMENT),
              "min_seconds": (0, MAX_INCREMENT), "decimals": (0, MAX_DECIMALS)}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
# sums of money are exact: a result that would need rounding raises instead
_EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])
_PLAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PREFIX = re.compile(r"^[0-9]{0,32}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_SEPARATORS = str.maketrans("", "", " -.()/")


class RatingError(ValueError):
    """A rating input that cannot be used, worded as one line."""


class NoRateError(RatingError):
    """No rate of the plan applies to that number at that instant."""


# -- checks shared with settings, CSV and the store -----------------------------------------

def check_currency(code: str) -> str:
    if not isinstance(code, str) or not _CURRENCY.match(code):
        raise RatingError(f"currency {code!r} is not an ISO 4217 code like EUR")
    return code


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise RatingError(f"time zone {name!r} is not an IANA zone like UTC or Europe/Berlin") from None


def check_plan_name(name: str) -> str:
    if not isinstance(name, str) or not _PLAN_NAME.match(name):
        raise RatingError(f"plan name {name!r} must be 1-64 letters, digits, '_', '.', '-' "
                          "(starting with a letter or digit)")
    return name


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise RatingError(f"prefix {prefix!r} must be up to 32 digits (\"\" = any number)")
    return prefix


def _check_money(what: str, value: object) -> None:
    if not isinstance(value, Decimal):
        raise RatingError(f"{what} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite() or value < 0 or value >= MAX_MONEY:
        raise RatingError(f"{what} {value} must be a number from 0 to below {MAX_MONEY}")
    exponent = value.as_tuple().exponent        # an int: the value is finite (checked above)
    if isinstance(exponent, int) and exponent < -MAX_MONEY_DECIMALS:
        raise RatingError(f"{what} {value} has more than {MAX_MONEY_DECIMALS} decimals")


def _check_int(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RatingError(f"{what} must be a whole number from {low} to {high}, not {value!r}")


def _aware(what: str, value: object) -> None:
    if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
        raise RatingError(f"{what} must be a date-time with a time zone, not {value!r}")


# -- the model ---------------------------------------------------------------------------

class Rate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One priced destination (see the module doc).  Validated on construction."""
    prefix: str
    price_per_min: Decimal
    currency: str
    name: str = ""
    connect_fee: Decimal = Decimal(0)
    first_increment: int = 60
    next_increment: int = 60
    min_seconds: int = 0
    rounding: Rounding = "half_up"
    decimals: int = 4
    valid_from: datetime | None = None        # inclusive
    valid_to: datetime | None = None          # exclusive
    weekdays: frozenset[int] = frozenset()    # 0 = Monday .. 6 = Sunday; empty = every day
    time_from: int = 0                        # seconds after local midnight, inclusive
    time_to: int = DAY                        # exclusive; < time_from wraps over midnight

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if not isinstance(self.name, str) or len(self.name) > 64 or not self.name.isprintable():
            raise RatingError(f"name {self.name!r} must be printable text of at most 64 characters")
        _check_money("price_per_min", self.price_per_min)
        _check_money("connect_fee", self.connect_fee)
        for what, (low, high) in INT_LIMITS.items():
            _check_int(what, getattr(self, what), low, high)
        if self.rounding not in ROUNDINGS:
            raise RatingError(f"rounding {self.rounding!r} must be one of {', '.join(ROUNDINGS)}")
        check_currency(self.currency)
        _aware("valid_from", self.valid_from)
        _aware("valid_to", self.valid_to)
        if self.valid_from is not None and self.valid_to is not None and self.valid_from >= self.valid_to:
            raise RatingError(f"valid_from {self.valid_from.isoformat()} must be before "
                              f"valid_to {self.valid_to.isoformat()}")
        if not all(isinstance(d, int) and 0 <= d <= 6 for d in self.weekdays):
            raise RatingError(f"weekdays must be numbers 0 (Monday) to 6 (Sunday), not {sorted(self.weekdays)}")
        _check_int("time_from", self.time_from, 0, DAY - 1)
        _check_int("time_to", self.time_to, 0, DAY)
        if self.time_from == self.time_to:
            raise RatingError("time_from equals time_to; leave both empty for the whole day")

    @property
    def label(self) -> str:
        return f"{self.prefix or '*'}" + (f" ({self.name})" if self.name else "")


class ChargePart(msgspec.Struct, frozen=True, kw_only=True):
    """Consecutive increments priced by one rate."""
    prefix: str
    name: str
    start_ms: int                             # where the part's first increment starts (epoch ms)
    usage_ms: int                             # call time inside the part (parts sum to duration_ms)
    billed_seconds: int
    increments: tuple[tuple[int, int], ...]   # (count, seconds), in order
    price_per_min: Decimal
    cost: Decimal                             # price_per_min * billed_seconds / 60, rounded per the rate
    rounding: str
    decimals: int


class Charge(msgspec.Struct, frozen=True, kw_only=True):
    """A rated call: the total and everything needed to recompute it by hand."""
    plan: str
    number: str                               # normalised
    start_ms: int                             # answer instant, epoch ms UTC
    duration_ms: int
    timezone: str                             # the plan's zone (periods, display)
    currency: str
    prefix: str                               # the opening rate
    name: str
    connect_fee: Decimal
    parts: tuple[ChargePart, ...]
    billed_seconds: int
    total: Decimal                            # connect_fee + sum(part.cost), rounded per the opening rate
    rounding: str
    decimals: int

    def explain(self) -> list[str]:
        """The calculation as text lines, the way one would check it by hand."""
        zone = ZoneInfo(self.timezone)
        lines = [f"plan {self.plan}, number {self.number}, answered {_iso(self.start_ms, zone)}, "
                 f"duration {_seconds(self.duration_ms)} s, currency {self.currency}"]
        if not self.parts:
            lines.append(f"no usage: total {self.total}")
            return lines
        lines.append(f"connect fee {_plain(self.connect_fee)} (rate {self.prefix or '*'})")
        for i, p in enumerate(self.parts, 1):
            incs = " + ".join(f"{n}x{s} s" for n, s in p.increments)
            num, den = (p.price_per_min * p.billed_seconds).as_integer_ratio()
            exact = _show_ratio(num, den * 60, p.decimals + 3)
            label = p.prefix or "*"
            lines.append(
                f"part {i}: rate {label}{f' {p.name!r}' if p.name else ''} from {_iso(p.start_ms, zone)}, "
                f"used {_seconds(p.usage_ms)} s, billed {p.billed_seconds} s ({incs}) x "
                f"{_plain(p.price_per_min)}/min / 60 = {exact} -> {p.rounding} {p.decimals} dp = {p.cost}")
        terms = " + ".join([_plain(self.connect_fee)] + [str(p.cost) for p in self.parts])
        subtotal = _EXACT.create_decimal(0)
        for value in [self.connect_fee] + [p.cost for p in self.parts]:
            subtotal = _EXACT.add(subtotal, value)
        lines.append(f"total {terms} = {_plain(subtotal)} -> {self.rounding} {self.decimals} dp = "
                     f"{self.total} {self.currency}")
        return lines


class _Entry:
    """A rate prepared for the hot path: instants as epoch ms, price as a ratio."""
    __slots__ = ("rate", "from_ms", "to_ms", "days", "t_from", "t_to", "timed", "num", "den")

    def __init__(self, rate: Rate):
        self.rate = rate
        self.from_ms = None if rate.valid_from is None else to_epoch_ms(rate.valid_from)
        self.to_ms = None if rate.valid_to is None else to_epoch_ms(rate.valid_to)
        self.days = rate.weekdays
        self.t_from, self.t_to = rate.time_from, rate.time_to
        self.timed = bool(rate.weekdays) or (rate.time_from, rate.time_to) != (0, DAY)
        self.num, self.den = rate.price_per_min.as_integer_ratio()


class RatePlan:
    """A named set of rates in one currency, its periods read in ``timezone``.

    Immutable once built; construction validates the whole set (one currency,
    no two same-prefix rates applicable at one instant) and indexes it.
    """
    __slots__ = ("name", "rates", "timezone", "currency", "_zone", "_by_prefix", "_longest")

    def __init__(self, name: str, rates: Iterable[Rate] = (), timezone: str = "UTC"):
        self.name = check_plan_name(name)
        self._zone = check_timezone(timezone)
        self.timezone = timezone
        self.rates: tuple[Rate, ...] = tuple(rates)
        for r in self.rates:
            if not isinstance(r, Rate):
                raise TypeError(f"plan {name}: not a Rate: {r!r}")
        currencies = sorted({r.currency for r in self.rates})
        if len(currencies) > 1:
            raise RatingError(f"plan {name}: rates in several currencies ({', '.join(currencies)}); "
                              "a plan has one currency")
        self.currency: str | None = currencies[0] if currencies else None
        clashes = find_overlaps(self.rates)
        if clashes:
            i, j = clashes[0]
            raise RatingError(f"plan {name}: rates {describe_rate(self.rates[i])} and "
                              f"{describe_rate(self.rates[j])} apply at the same time")
        by_prefix: dict[str, list[_Entry]] = {}
        for r in self.rates:
            by_prefix.setdefault(r.prefix, []).append(_Entry(r))
        self._by_prefix = by_prefix
        self._longest = max((len(p) for p in by_prefix), default=0)

    def __repr__(self) -> str:
        return f"RatePlan({self.name!r}, {len(self.rates)} rates, timezone={self.timezone!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RatePlan):
            return NotImplemented
        return (self.name, self.timezone) == (other.name, other.timezone) and \
            Counter(self.rates) == Counter(other.rates)

    __hash__ = None  # type: ignore[assignment]

    # -- internals used by match / rate_call / max_duration ------------------------------
    def _candidates(self, number: str) -> list[_Entry]:
        """Every rate whose prefix starts the number, longest prefix first."""
        found: list[_Entry] = []
        for length in range(min(len(number), self._longest), -1, -1):
            entries = self._by_prefix.get(number[:length])
            if entries:
                found.extend(entries)
        return found

    def _local(self, ms: int) -> datetime:
        return (_EPOCH + ms * _MS).astimezone(self._zone)

    def _pick(self, candidates: list[_Entry], ms: int) -> _Entry | None:
        weekday = second = -1
        for e in candidates:
            if (e.from_ms is not None and ms < e.from_ms) or (e.to_ms is not None and ms >= e.to_ms):
                continue
            if e.timed:
                if weekday < 0:
                    local = self._local(ms)
                    weekday, second = local.weekday(), local.hour * 3600 + local.minute * 60 + local.second
                if e.days and weekday not in e.days:
                    continue
                if not _in_window(second, e.t_from, e.t_to):
                    continue
            return e
        return None

    def _next_change(self, candidates: list[_Entry], ms: int) -> int | None:
        """The first instant after ``ms`` at which the applicable rate may change."""
        best: int | None = None
        for e in candidates:
            for edge in (e.from_ms, e.to_ms):
                if edge is not None and edge > ms and (best is None or edge < best):
                    best = edge
        times = {t % DAY for e in candidates if e.timed for t in (e.t_from, e.t_to)}
        if any(e.days for e in candidates):
            times.add(0)
        if not times:
            return best
        local = self._local(ms)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        for day in (0, 1):
            for second in times:
                # wall-clock arithmetic: the local time of day, whatever the UTC offset
                edge = to_epoch_ms(midnight + timedelta(days=day, seconds=second))
                if edge > ms and (best is None or edge < best):
                    best = edge
        # a DST change moves the local time of day by itself: split there too
        if best is not None and self._local(ms).utcoffset() != self._local(best - 1).utcoffset():
            before = self._local(ms).utcoffset()
            lo, hi = ms, best - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._local(mid).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            best = hi
        return best


@dataclass(frozen=True)
class RatesSnapshot:
    """Every plan and assignment, read in one transaction (for credit control's hot path)."""
    version: int
    plans: Mapping[str, RatePlan]
    accounts: Mapping[str, str] = field(default_factory=dict)   # account -> plan name

    def plan_for(self, account: str, default: str = "") -> RatePlan | None:
        name = self.accounts.get(account) or default
        return self.plans.get(name) if name else None


# -- public functions ----------------------------------------------------------------------

def match(plan: RatePlan, number: str, at: int | datetime) -> Rate | None:
    """The rate for ``number`` at ``at`` (epoch ms or aware datetime): the longest
    prefix among the rates applicable then; None when none applies."""
    entry = plan._pick(plan._candidates(normalize_number(number)), to_epoch_ms(at))
    return None if entry is None else entry.rate


def rate_call(plan: RatePlan, number: str, start_ms: int, duration_ms: int) -> Charge:
    """Rate a call answered at ``start_ms`` (epoch ms UTC) that lasted ``duration_ms``.

    Raises NoRateError when no rate applies at the answer or at the start of
    a later increment."""
    _check_int("start_ms", start_ms, -(2 ** 62), 2 ** 62)
    _check_int("duration_ms", duration_ms, 0, 2 ** 40)
    walk = _Walk(plan, normalize_number(number), start_ms)
    if duration_ms > 0:
        walk.lay_until(max(duration_ms, walk.opening.rate.min_seconds * 1000), strict=True)
    return walk.charge(duration_ms)


def first_cost(plan: RatePlan, number: str, at: int | datetime) -> Decimal:
    """What the first increment (and the minimum time) of a call answered at
    ``at`` costs, connect fee included: ``rate_call(plan, number, at, 1).total``
    without building the charge (credit control asks it at every INVITE).
    Raises NoRateError like ``rate_call``."""
    walk = _Walk(plan, normalize_number(number), to_epoch_ms(at))
    walk.lay_until(max(1, walk.opening.rate.min_seconds * 1000), strict=True)
    return walk.total()


def max_duration(plan: RatePlan, number: str, at: int | datetime, credit: Decimal, *,
                 limit: int = DAY) -> int:
    """How many seconds a call answered at ``at`` may last with ``credit``:
    increments, minimum time, connect fee and periods included.  0 = not even
    the first increment is affordable; ``limit`` caps the answer (free rates).
    Stops early where no rate applies any more.  Raises NoRateError when no
    rate applies at ``at``."""
    if not isinstance(credit, Decimal) or not credit.is_finite():
        raise RatingError(f"credit must be a finite Decimal, not {credit!r}")
    _check_int("limit", limit, 0, 2 ** 31)
    walk = _Walk(plan, normalize_number(number), to_epoch_ms(at))
    if credit < 0:
        return 0
    opening = walk.opening.rate
    if not walk.lay_until(max(1, opening.min_seconds * 1000), strict=False) or walk.total() > credit:
        return 0
    limit_ms = limit * 1000
    # the common prepaid case, credit for more than ``limit``: one walk to the limit
    # instead of a search per rate period (costs only grow with time, so every
    # shorter call is affordable too and the search would end at the limit)
    whole = _Walk(plan, walk.number, walk.start)
    if whole.lay_until(max(limit_ms, opening.min_seconds * 1000), strict=False) and whole.total() <= credit:
        return limit
    while walk.p < limit_ms:
        entry, end = walk.segment()
        if entry is None:
            break
        size = entry.rate.next_increment
        stop = limit_ms if end is None else min(end, limit_ms)
        most = -(-(stop - walk.p) // (size * 1000))
        fixed = walk.fixed_subtotal(entry)
        lo, hi = 0, most                      # lo is affordable, find the largest
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if walk.total_if(entry, mid * size, fixed) <= credit:
                lo = mid
            else:
                hi = mid - 1
        if lo:
            walk.lay(entry, lo, size)
        if lo < most:
            break
    return min(walk.p // 1000, limit)


def round_money(value: Decimal, decimals: int, method: str) -> Decimal:
    """``value`` rounded to ``decimals`` places: up / down (away from / towards
    zero), half_up, half_even.  The result has exactly that exponent."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise RatingError(f"cannot round {value!r}: not a finite Decimal")
    num, den = value.as_integer_ratio()
    if num < 0:
        return -_round_ratio(-num, den, decimals, method)
    return _round_ratio(num, den, decimals, method)


def rates_overlap(a: Rate, b: Rate) -> bool:
    """True when both have the same prefix and can apply at the same instant."""
    if a.prefix != b.prefix:
        return False
    if a.valid_to is not None and b.valid_from is not None and a.valid_to <= b.valid_from:
        return False
    if b.valid_to is not None and a.valid_from is not None and b.valid_to <= a.valid_from:
        return False
    if a.weekdays and b.weekdays and not a.weekdays & b.weekdays:
        return False
    return any(x0 < y1 and y0 < x1 for x0, x1 in _windows(a) for y0, y1 in _windows(b))


def find_overlaps(rates: Iterable[Rate]) -> list[tuple[int, int]]:
    """Index pairs (i < j) of rates that would both apply at some instant."""
    by_prefix: dict[str, list[int]] = {}
    rates = list(rates)
    for i, r in enumerate(rates):
        by_prefix.setdefault(r.prefix, []).append(i)
    found = []
    for indexes in by_prefix.values():
        for n, i in enumerate(indexes):
            for j in indexes[n + 1:]:
                if rates_overlap(rates[i], rates[j]):
                    found.append((i, j))
    return sorted(found)


def describe_rate(rate: Rate) -> str:
    """Short text naming a rate in messages: prefix, name, period, validity."""
    bits = []
    if rate.weekdays:
        bits.append(format_weekdays(rate.weekdays))
    if (rate.time_from, rate.time_to) != (0, DAY):
        bits.append(f"{format_time_of_day(rate.time_from)}-{format_time_of_day(rate.time_to)}")
    if rate.valid_from is not None:
        bits.append(f"from {rate.valid_from.isoformat()}")
    if rate.valid_to is not None:
        bits.append(f"to {rate.valid_to.isoformat()}")
    return rate.label + (f" [{' '.join(bits)}]" if bits else "")


def normalize_number(number: str) -> str:
    """Digits as rates see them: spaces and - . ( ) / removed, one leading + dropped."""
    text = str(number).strip().translate(_SEPARATORS)
    return text[1:] if text.startswith("+") else text


def number_from_uri(uri: str) -> str:
    """The number a CDR's ``dialled`` Request-URI names: user part of a sip:/sips:
    URI or the tel: number, parameters dropped, then ``normalize_number``."""
    text = uri.strip()
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1:text.index(">")]
    lower = text.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lower.startswith(scheme):
            text = text[len(scheme):]
            break
    text = text.split("@", 1)[0].split(";", 1)[0].split("?", 1)[0]
    return normalize_number(unquote(text))


# -- internals ---------------------------------------------------------------------------

class _Part:
    __slots__ = ("entry", "start", "billed", "increments")

    def __init__(self, entry: _Entry, start: int):
        self.entry, self.start, self.billed = entry, start, 0
        self.increments: list[list[int]] = []

    def add(self, count: int, size: int) -> None:
        self.billed += count * size
        if self.increments and self.increments[-1][1] == size:
            self.increments[-1][0] += count
        else:
            self.increments.append([count, size])


def _part_cost(entry: _Entry, billed: int) -> Decimal:
    rate = entry.rate
    return _round_ratio(entry.num * billed, entry.den * 60, rate.decimals, rate.rounding)


class _Walk:
    """Lays a call's increments along time; shared by rate_call and max_duration
    so both see exactly the same increments and prices."""

    def __init__(self, plan: RatePlan, number: str, start_ms: int):
        self.plan, self.number, self.start = plan, number, start_ms
        self.candidates = plan._candidates(number)
        self.p = 0                            # ms after the answer where the next increment starts
        self.parts: list[_Part] = []
        opening = plan._pick(self.candidates, start_ms)
        if opening is None:
            raise NoRateError(f"plan {plan.name} has no rate for {number or '(empty)'} at "
                              f"{_iso(start_ms, plan._zone)}")
        self.opening = opening

    def segment(self) -> tuple[_Entry | None, int | None]:
        """The rate applicable at ``p`` and where (ms after the answer) it may change."""
        ms = self.start + self.p
        entry = self.plan._pick(self.candidates, ms)
        if entry is None:
            return None, None
        change = self.plan._next_change(self.candidates, ms)
        return entry, None if change is None else change - self.start

    def lay(self, entry: _Entry, count: int, size: int) -> None:
        if not (self.parts and self.parts[-1].entry is entry):
            self.parts.append(_Part(entry, self.p))
        self.parts[-1].add(count, size)
        self.p += count * size * 1000

    def lay_until(self, target: int, *, strict: bool) -> bool:
        """Lay increments until they cover ``target`` ms; False (or NoRateError
        when strict) where no rate applies."""
        while self.p < target:
            entry, end = self.segment()
            if entry is None:
                if strict:
                    raise NoRateError(
                        f"plan {self.plan.name} has no rate for {self.number} at "
                        f"{_iso(self.start + self.p, self.plan._zone)} ({self.p // 1000} s into the call)")
                return False
            if not self.parts:
                self.lay(entry, 1, entry.rate.first_increment)
                continue
            size = entry.rate.next_increment
            stop = target if end is None else min(end, target)
            self.lay(entry, -(-(stop - self.p) // (size * 1000)), size)
        return True

    def fixed_subtotal(self, entry: _Entry) -> Decimal:
        """Connect fee + costs of the parts that more increments under ``entry`` leave unchanged."""
        parts = self.parts[:-1] if self.parts and self.parts[-1].entry is entry else self.parts
        total = self.opening.rate.connect_fee
        for part in parts:
            total = _EXACT.add(total, _part_cost(part.entry, part.billed))
        return total

    def total_if(self, entry: _Entry, extra: int, fixed: Decimal) -> Decimal:
        """The total if ``extra`` more seconds were billed under ``entry`` now."""
        billed = self.parts[-1].billed if self.parts and self.parts[-1].entry is entry else 0
        rate = self.opening.rate
        return round_money(_EXACT.add(fixed, _part_cost(entry, billed + extra)), rate.decimals, rate.rounding)

    def total(self) -> Decimal:
        rate = self.opening.rate
        if not self.parts:
            return _round_ratio(0, 1, rate.decimals, rate.rounding)
        subtotal = rate.connect_fee
        for part in self.parts:
            subtotal = _EXACT.add(subtotal, _part_cost(part.entry, part.billed))
        return round_money(subtotal, rate.decimals, rate.rounding)

    def charge(self, duration_ms: int) -> Charge:
        parts = []
        for i, part in enumerate(self.parts):
            end = self.parts[i + 1].start if i + 1 < len(self.parts) else max(self.p, duration_ms)
            usage = max(0, min(end, duration_ms) - min(part.start, duration_ms))
            rate = part.entry.rate
            parts.append(ChargePart(
                prefix=rate.prefix, name=rate.name, start_ms=self.start + part.start, usage_ms=usage,
                billed_seconds=part.billed, increments=tuple((n, s) for n, s in part.increments),
                price_per_min=rate.price_per_min, cost=_part_cost(part.entry, part.billed),
                rounding=rate.rounding, decimals=rate.decimals))
        opening = self.opening.rate
        return Charge(
            plan=self.plan.name, number=self.number, start_ms=self.start, duration_ms=duration_ms,
            timezone=self.plan.timezone, currency=opening.currency, prefix=opening.prefix,
            name=opening.name, connect_fee=opening.connect_fee if parts else Decimal(0),
            parts=tuple(parts), billed_seconds=sum(p.billed_seconds for p in parts),
            total=self.total(), rounding=opening.rounding, decimals=opening.decimals)


def _round_ratio(num: int, den: int, decimals: int, method: str) -> Decimal:
    """num/den (>= 0) rounded to ``decimals`` places, exactly."""
    q, r = divmod(num * 10 ** decimals, den)
    if r and (method == "up"
              or (method == "half_up" and 2 * r >= den)
              or (method == "half_even" and (2 * r > den or (2 * r == den and q % 2)))):
        q += 1
    elif method not in ROUNDINGS:
        raise RatingError(f"rounding {method!r} must be one of {', '.join(ROUNDINGS)}")
    return Decimal(f"{q}E-{decimals}")          # exact: a Decimal from text is never rounded


def _in_window(second: int, start: int, end: int) -> bool:
    if start < end:
        return start <= second < end
    return second >= start or second < end        # wraps over midnight


def _windows(rate: Rate) -> tuple[tuple[int, int], ...]:
    if rate.time_from < rate.time_to:
        return ((rate.time_from, rate.time_to),)
    return ((rate.time_from, DAY), (0, rate.time_to))


def to_epoch_ms(at: int | datetime) -> int:
    """Epoch milliseconds of an aware datetime (exact, no float); an int passes through."""
    if isinstance(at, datetime):
        if at.utcoffset() is None:
            raise RatingError(f"instant {at.isoformat()} has no time zone")
        return (at - _EPOCH) // _MS
    if isinstance(at, bool) or not isinstance(at, int):
        raise RatingError(f"instant must be epoch milliseconds or an aware datetime, not {at!r}")
    return at


def _iso(ms: int, zone: ZoneInfo) -> str:
    return (_EPOCH + ms * _MS).astimezone(zone).isoformat(timespec="milliseconds")


def format_weekdays(days: Iterable[int]) -> str:
    """Canonical text of a weekday set: Monday first, runs of three or more as
    ranges ("mon-fri", "sat,sun"); "" = every day."""
    runs: list[list[int]] = []
    for d in sorted(set(days)):
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    items: list[str] = []
    for run in runs:
        if len(run) >= 3:
            items.append(f"{WEEKDAYS[run[0]]}-{WEEKDAYS[run[-1]]}")
        else:
            items.extend(WEEKDAYS[d] for d in run)
    return ",".join(items)


def format_time_of_day(second: int) -> str:
    """Seconds after midnight as HH:MM (HH:MM:SS when needed); 86400 = "24:00"."""
    h, rest = divmod(second, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def _plain(value: Decimal) -> str:
    return format(value, "f")


def _show_ratio(num: int, den: int, digits: int) -> str:
    """num/den with ``digits`` decimals, truncated, '...' when it goes on."""
    q, r = divmod(num * 10 ** digits, den)
    text = _plain(Decimal((0, tuple(int(d) for d in str(q)), -digits)).normalize()) if not r else \
        _plain(Decimal((0, tuple(int(d) for d in str(q)), -digits))) + "..."
    return text
