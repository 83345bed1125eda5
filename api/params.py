"""Query parameters shared by the routes: one grammar and one set of checks for the whole API.

Why one module: every range-taking endpoint used to parse ``from`` / ``to``
its own way, and only ``/v1/cdrs`` refused an inverted range or a misspelt
parameter.  Here each rule is written once and the routes declare it:

* ``Range``: ``from`` / ``to`` as ISO 8601, a day (``2026-11-28``), a month
  (``2026-11``) or epoch milliseconds; a day or month given as ``to``
  includes the whole of it; ``to`` must be after ``from``;
* ``ReportPeriod``: ``Range`` or ``month=YYYY-MM`` (not both);
* ``Limit``: 1..1000;
* ``known_params``: a query parameter the endpoint does not declare is
  refused (a misspelt filter must not silently widen the result).

Every refusal is a 422 whose ``detail[].loc`` names the parameter.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from .deps import Principal

__all__ = ["MAX_MS", "invalid", "parse_instant", "TimeRange", "Range", "ReportPeriod", "Limit",
           "Month", "Ip", "Caller", "Callee", "Gateway", "known_params", "Offset", "Paging", "PageParams",
           "AddressPath", "NamePath"]

MAX_MS = (2**32 - 1) * 1000      # what a ClickHouse DateTime can hold (2106-02-07)
DAY_MS = 86_400_000
TIME_HELP = "ISO 8601 (`2026-11-28T10:00:00Z`; no offset = UTC), a day (`2026-11-28`), a month (`2026-11`) " \
            "or epoch milliseconds"


def invalid(field: str, message: str, location: str = "query") -> RequestValidationError:
    """A 422 naming ``field``, shaped as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": (location, field),
                                    "msg": message, "input": None}])


def _month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def parse_instant(value: Any, *, end: bool = False) -> Any:
    """Epoch ms of ``value``.  ``end``: a day or month means its end (the start of the next)."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        if re.fullmatch(r"\d{1,16}", text):
            ms = int(text)
        elif m := re.fullmatch(r"(\d{4})-(\d{2})", text):
            year, month = int(m[1]), int(m[2])
            if end:
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            ms = _month_start(year, month)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            ms = int(moment.timestamp() * 1000)
            if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                ms += DAY_MS
    except (ValueError, OverflowError):
        raise ValueError(f"expected {TIME_HELP}") from None
    if not 0 <= ms <= MAX_MS:
        raise ValueError("out of range (1970-01-01 .. 2106-02-07)")
    return ms


def _check_month(value: str | None) -> str | None:
    if value is not None:
        m = re.fullmatch(r"(\d{4})-(\d{2})", value.strip())
        if m is None or not 1 <= int(m[2]) <= 12 or int(m[1]) < 1970:
            raise ValueError("expected a month YYYY-MM (2026-11)")
    return value


_TIME_SCHEMA = WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}],
                               "examples": ["2026-11-28T10:00:00Z", "2026-11", "1795824000000"]})
From = Annotated[int | None, BeforeValidator(parse_instant), _TIME_SCHEMA]
To = Annotated[int | None, BeforeValidator(partial(parse_instant, end=True)), _TIME_SCHEMA]
Month = Annotated[str | None, AfterValidator(_check_month)]


@dataclass(frozen=True)
class TimeRange:
    """A half-open range ``from_ms <= t < to_ms`` (None: unbounded)."""
    from_ms: int | None = None
    to_ms: int | None = None


def time_range(
    from_: Annotated[From, Query(alias="from", description=f"start, inclusive: {TIME_HELP}")] = None,
    to: Annotated[To, Query(description="end, exclusive (a day or month: up to its end)")] = None,
) -> TimeRange:
    if from_ is not None and to is not None and to <= from_:
        raise invalid("to", "must be after 'from'")
    return TimeRange(from_, to)


Range = Annotated[TimeRange, Depends(time_range)]


def report_period(
    range_: Range,
    month: Annotated[Month, Query(description="a whole month `YYYY-MM`, instead of from/to")] = None,
) -> TimeRange:
    if month is None:
        return range_
    if range_.from_ms is not None or range_.to_ms is not None:
        raise invalid("month", "give month or from/to, not both")
    return TimeRange(parse_instant(month), parse_instant(month, end=True))


ReportPeriod = Annotated[TimeRange, Depends(report_period)]

Limit = Annotated[int, Query(ge=1, le=1000, description="page size, 1..1000")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="items skipped, 0..1000000")]


@dataclass(frozen=True)
class Paging:
    """``limit`` / ``offset`` of the provisioning lists (their tables are small: sliced here)."""
    limit: int = 100
    offset: int = 0

    def page(self, items: list[Any], convert: Callable[[Any], Any] = lambda item: item) -> dict[str, Any]:
        """The page of ``items`` (only its items ``convert``-ed) and the paging figures."""
        return {"items": [convert(item) for item in items[self.offset:self.offset + self.limit]],
                "total": len(items), "limit": self.limit, "offset": self.offset}


def paging(limit: Limit = 100, offset: Offset = 0) -> Paging:
    return Paging(limit, offset)


PageParams = Annotated[Paging, Depends(paging)]

# path parameters of the provisioning routes (the service checks the syntax; these bound the size)
AddressPath = Annotated[str, Path(min_length=3, max_length=330, description="user@domain")]
NamePath = Annotated[str, Path(min_length=1, max_length=64)]


# -- CDR filters (/v1/cdrs and /v1/stats) ---------------------------------------------------------

def _ip(value: Any) -> Any:
    if value is None:
        return value
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise ValueError("expected an IPv4 or IPv6 address") from None


PREFIX = r"^\+?[0-9A-Za-z*#._-]+$"
Ip = Annotated[str | None, BeforeValidator(_ip)]
Caller = Annotated[str | None, Query(max_length=64, pattern=PREFIX, description=(
    "prefix of the caller's number/user (From URI user part, leading + ignored)"))]
Callee = Annotated[str | None, Query(max_length=64, pattern=PREFIX, description=(
    "prefix of the dialled number (Request-URI user part, leading + ignored)"))]
Gateway = Annotated[str | None, Query(max_length=255, description="any leg routed to this gateway")]


# -- unknown parameters --------------------------------------------------------------------------

def _query_names(dependant) -> frozenset[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


def known_params(request: Request, _who: Principal) -> None:
    """Refuse query parameters the route does not declare (itself or through its
    dependencies).  It depends on the principal so that a request without a
    valid token is a 401 first, whatever its parameters."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = _query_names(dependant)
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise invalid(name, f"unknown parameter; known: {known}")
