"""Report periods from user text: ``[from, to)`` in epoch ms.  Pure: no clock.

Accepted for a bound: epoch milliseconds (10-16 digits), ``YYYY-MM`` (the
month), ``YYYY-MM-DD`` (the day) and ISO 8601 date-times (UTC when they carry
no offset).  An *end* bound given as a month or a day means its end, so
``--from 2026-11 --to 2026-11`` is November.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

__all__ = ["PeriodError", "parse_bound", "month_range"]

_EPOCH_MS = re.compile(r"\d{10,16}")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
DAY_MS = 86_400_000


class PeriodError(ValueError):
    """Text that is not a period bound."""


def _month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def parse_bound(text: str, *, end: bool = False) -> int:
    """One bound as epoch ms (``end``: a month or day means its end)."""
    raw = text.strip()
    if _EPOCH_MS.fullmatch(raw):
        return int(raw)
    month = _MONTH.fullmatch(raw)
    if month:
        year, mon = int(month[1]), int(month[2])
        if not 1 <= mon <= 12:
            raise PeriodError(f"{raw!r} is not a month (YYYY-MM)")
        if end:
            year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
        return _month_start(year, mon)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise PeriodError(f"{raw!r} is not an ISO date/time, YYYY-MM or epoch ms") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    ms = int(moment.timestamp() * 1000)
    return ms + DAY_MS if end and _DAY.fullmatch(raw) else ms


def month_range(text: str) -> tuple[int, int]:
    """``YYYY-MM`` -> the month's ``[start, end)``; anything else is refused."""
    raw = text.strip()
    if not _MONTH.fullmatch(raw):
        raise PeriodError(f"{raw!r} is not a month (YYYY-MM)")
    return parse_bound(raw), parse_bound(raw, end=True)

