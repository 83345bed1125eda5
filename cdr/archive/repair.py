"""CDR repair: every call the archive shows over gets its CDR (docs/operations.md).

The archive is complete (the proxy keeps each event until the archive has
it), but the CDR path after it is not immune to a broker restart: rows the
processor published into a broker that then died, a processor that lost its
place.  Every ``[archive] repair_seconds`` the API process looks for calls
whose ending event (BYE, final failure, timeout, teardown, session expiry,
media timeout) is archived, older than ``repair_grace_seconds`` (the live
path's turn) and younger than ``repair_lookback_seconds``, and that have no
row in ``cdr``.  It folds them from the archive with the shared fold
(cdr/fold.py) and publishes their rows to ``cdr.records`` like the
processor does, so the CDR sink stores them and billing debits them (both
idempotent: the live path's rows, should they come after all, are the same).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from proxy.contract import events as ev
from proxy.contract.cdr import CdrLeg
from proxy.infra import clock

from ..fold import rebuild_call
from .store import MAX_S, ArchiveStore

__all__ = ["CdrRepair", "ENDING_TYPES"]

log = logging.getLogger("cdr.archive.repair")

# events after which a call is over (or will be as soon as its last event is in)
ENDING_TYPES = ("call.bye", "call.failed", "dialog.timeout", "dialog.teardown", "dialog.session_expired",
                "media.timeout")


class CdrRepair:
    """``publish(rows)`` hands rows to cdr.records (raises when it cannot)."""

    def __init__(self, archive: ArchiveStore, publish: Callable[[list[CdrLeg]], Awaitable[None]], *,
                 window_ms: int, span_ms: int, interval_s: float = 30.0, grace_s: float = 30.0,
                 lookback_s: float = 7200.0) -> None:
        self.archive = archive
        self.publish = publish
        self.window_ms = window_ms
        self.span_ms = span_ms
        self.interval_s = interval_s
        self.grace_ms = int(grace_s * 1000)
        self.lookback_ms = int(lookback_s * 1000)
        self.repaired = 0           # calls whose rows were published by the repair
        self.runs = 0
        # call -> when its rows went out: not again before the CDR sink had its time
        self._published: dict[str, int] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> asyncio.Event:
        return self._stop

    def missing(self, now_ms: int) -> list[str]:
        """Call-IDs over in the archive (ending event in the window) without a CDR row."""
        lo, hi = now_ms - self.lookback_ms, now_ms - self.grace_ms
        sql = ("SELECT DISTINCT call_id FROM events WHERE source = 'sip' "
               "AND ts >= toDateTime({lo_s}) AND ts < toDateTime({hi_s}) AND ts_ms >= {lo} AND ts_ms < {hi} "
               "AND type IN {ending} "
               # the calls with a CDR: cdr_calls is sorted by setup time, cdr by cdr_id,
               # so both lookups are index ranges (not a scan of the month's legs)
               "AND call_id NOT IN (SELECT call_id FROM cdr WHERE cdr_id IN "
               "(SELECT cdr_id FROM cdr_calls WHERE setup_ms >= {setup_lo})) "
               "ORDER BY call_id")
        params = {"lo_s": max(0, lo) // 1000, "hi_s": min(hi // 1000 + 1, MAX_S), "lo": lo, "hi": hi,
                  "ending": list(ENDING_TYPES), "setup_lo": max(0, lo - self.span_ms)}
        return [row[0] for row in self.archive.backend.query(sql, params)]

    def rows_of(self, call_ids: list[str], now_ms: int) -> list[CdrLeg]:
        rows: list[CdrLeg] = []
        lo = now_ms - self.lookback_ms - self.span_ms
        for _, payloads in self.archive.call_events(call_ids, max(0, lo), now_ms + 1):
            events = []
            for payload in payloads:
                try:
                    events.append(ev.read(payload))
                except ev.Unreadable:
                    continue
            rows.extend(rebuild_call(events, self.window_ms, now_ms) or [])
        return rows

    async def repair_once(self) -> int:
        """One pass; returns how many calls got their rows published."""
        now = clock.now_ms()
        recent = now - 3 * self.grace_ms        # published rows get three graces to be stored
        self._published = {c: ms for c, ms in self._published.items() if ms > recent}
        call_ids = [c for c in await asyncio.to_thread(self.missing, now) if c not in self._published]
        if not call_ids:
            return 0
        rows = await asyncio.to_thread(self.rows_of, call_ids, now)
        if rows:
            await self.publish(rows)
        self._published.update((row.call_id, now) for row in rows)
        calls = len({row.cdr_id for row in rows})
        self.repaired += calls
        log.warning("CDR repair: %d calls over without a CDR; %d rows from the archive published",
                    calls, len(rows))
        return calls

    async def run(self) -> None:
        if self.interval_s <= 0:            # off: a task that simply waits for the stop
            await self._stop.wait()
            return
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
                return
            except asyncio.TimeoutError:
                pass
            self.runs += 1
            try:
                await self.repair_once()
            except Exception as exc:        # store or broker not there: next round
                log.warning("CDR repair failed (next attempt in %gs): %r", self.interval_s, exc)
