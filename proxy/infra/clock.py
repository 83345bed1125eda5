"""The wall clock of every sipledger process: the one place business timestamps come from.

Event times, ledger entries, reports' "this month" and token expiry all read
this module, never ``time.time()`` or ``datetime.now()`` directly.  Timers and
timeouts use the monotonic clock and are not affected.

``SIPLEDGER_CLOCK_SHIFT_S`` (seconds, may be negative; read once at import,
so child processes inherit it) moves this clock.  The test suite runs with it
set to a year ahead to prove that nothing depends on today's date; libfaketime
cannot do this here (its LD_PRELOAD breaks ``subprocess`` waits and does not
reach the statically linked broker).
"""
from __future__ import annotations

import os
import time as _time
from datetime import datetime, timezone

SHIFT_ENV = "SIPLEDGER_CLOCK_SHIFT_S"


def _read_shift() -> float:
    raw = os.environ.get(SHIFT_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"error: {SHIFT_ENV}={raw!r}: must be a number of seconds") from None


SHIFT_S = _read_shift()


def time() -> float:
    """Seconds since the epoch, like ``time.time()``."""
    return _time.time() + SHIFT_S


def now_ms() -> int:
    """Milliseconds since the epoch (the unit of every event's ``ts_ms``)."""
    return int((_time.time() + SHIFT_S) * 1000)


def utcnow() -> datetime:
    """An aware UTC datetime."""
    return datetime.fromtimestamp(_time.time() + SHIFT_S, tz=timezone.utc)
