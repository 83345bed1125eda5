"""The CDR timer's scan (cdr/processor.py ``sweep``): slots holding a state
(live calls, finished calls not yet markers) are looked at every tick, the
finished markers only on a full scan (every FULL_SCAN_TICKS ticks, and the
first tick after partitions are assigned), which also picks up slots that
reached the table without ``_put`` (a changelog recovery)."""
from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

from bench.cdr_pipeline import call_events
from cdr import processor as P
from cdr.processor import FULL_SCAN_TICKS, CdrProcessor, Slot
from proxy.contract.callfold import fold

NOW = 1_767_225_600_000
TTL_MS = 600_000
WINDOW_MS = 3_600_000


def _processor(monkeypatch) -> tuple[CdrProcessor, list]:
    monkeypatch.setattr(P, "wall_ms", lambda: NOW)
    proc = CdrProcessor.__new__(CdrProcessor)
    proc.app = SimpleNamespace(rebalancing=False, in_recovery=False,
                               consumer=SimpleNamespace(assignment=lambda: set()))
    proc.table = SimpleNamespace(data={})
    proc.events_topic_name = "sip.events"
    proc._active_partitions = lambda: {0, 1}
    proc.assigned_at = {0: NOW - 3 * WINDOW_MS, 1: NOW - 3 * WINDOW_MS}     # taken long ago
    proc.ttl_ms, proc.window_ms = TTL_MS, WINDOW_MS
    proc.stats, proc.stats_interval, proc._last_stats = SimpleNamespace(counts=Counter()), 1e9, 1e18
    proc._unlogged = {}
    acted: list = []

    async def act(silent, resend, expired, shrink):
        acted.append(({k for k, _ in silent}, {k for k, _ in resend}, {k for k, _ in expired},
                      {k for k, _ in shrink}))

    proc._act = act
    return proc, acted


def test_markers_are_scanned_on_full_scans_only(monkeypatch):
    proc, acted = _processor(monkeypatch)
    talking = fold(call_events("answered_caller_bye", "live@t", NOW - 3 * WINDOW_MS)[:5])
    asyncio.run(proc.sweep())                       # the first tick is a full scan: nothing yet
    proc._put_many({b"old-marker": Slot(0, NOW - TTL_MS - 1, None, True),
                    b"silent": Slot(1, NOW - 3 * WINDOW_MS, talking),
                    b"young-marker": Slot(0, NOW - 1000, None, True)})
    assert set(proc._open) == {b"silent"}
    for tick in range(2, FULL_SCAN_TICKS + 1):
        acted.clear()
        asyncio.run(proc.sweep())
        expired = {b"old-marker"} if tick % FULL_SCAN_TICKS == 0 else set()
        assert acted == [({b"silent"}, set(), expired, set())]


def test_a_full_scan_after_an_assignment_finds_recovered_slots(monkeypatch):
    proc, acted = _processor(monkeypatch)
    asyncio.run(proc.sweep())
    talking = fold(call_events("answered_caller_bye", "rec@t", NOW - 3 * WINDOW_MS)[:5])
    # what a changelog recovery writes: straight into the store, no _put
    proc.table.data.update({b"recovered": Slot(1, NOW - 3 * WINDOW_MS, talking),
                            b"recovered-marker": Slot(0, NOW - TTL_MS - 1, None, True)})
    asyncio.run(proc.sweep())
    assert acted == []                              # a partial scan does not see them
    asyncio.run(proc._on_assigned(None, [SimpleNamespace(topic="sip.events", partition=1)]))
    proc.assigned_at[1] = NOW - 3 * WINDOW_MS       # (taken long ago: not "just assigned")
    asyncio.run(proc.sweep())
    assert acted == [({b"recovered"}, set(), {b"recovered-marker"}, set())]
    assert set(proc._open) == {b"recovered"}        # indexed from now on
