"""The ``sip_trace`` table: captured SIP messages (TraceRecord) in, a call's
messages out, and retention by day partitions (docs/trace.md)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import msgspec

from proxy.contract.trace import TraceBatch, TraceRecord
from proxy.infra import clock
from proxy.infra.clickhouse.backend import Backend

from .periodic import Periodic

log = logging.getLogger("sipledger.trace")

TABLE = "sip_trace"
FIELDS = ("id", "ts_ms", "direction", "transport", "src_ip", "src_port", "dst_ip", "dst_port", "method",
          "status", "call_id", "cseq", "node", "worker", "raw")
MAX_MESSAGES = 1000             # a call's trace as read back: at most this many messages


def problem(record: TraceRecord) -> str | None:
    """Why a record can never be stored (out of its columns' range), else None."""
    if not (0 <= record.src_port < 65536 and 0 <= record.dst_port < 65536 and 0 <= record.status < 65536):
        return "port or status out of range"
    if record.ts_ms < 0 or not record.call_id:
        return "no time or no Call-ID"
    return None


@dataclass
class TraceStore:
    backend: Backend

    def insert(self, records: Sequence[TraceRecord]) -> int:
        if not records:
            return 0
        columns: dict[str, list] = {name: [getattr(r, name) for r in records] for name in FIELDS}
        columns["ts"] = [r.ts_ms // 1000 for r in records]
        return self.backend.insert(TABLE, columns)

    def insert_batches(self, batches: Sequence[TraceBatch]) -> int:
        """The sink's insert: the good records of these batches (a bad one is logged and skipped)."""
        good = []
        for batch in batches:
            for record in batch.records:
                why = problem(record)
                if why is None:
                    good.append(record)
                else:
                    log.error("sip_trace: skipping capture %.80s: %s", record.id, why)
        self.insert(good)
        return sum(len(b.records) for b in batches)

    def call(self, call_id: str, limit: int = MAX_MESSAGES) -> list[TraceRecord]:
        """Every captured message of a Call-ID, in time order."""
        rows = self.backend.query_dicts(
            f"SELECT {', '.join(FIELDS)} FROM {TABLE} WHERE call_id = {{call_id}} "
            "ORDER BY ts_ms, id LIMIT 1 BY id LIMIT {limit}", {"call_id": call_id, "limit": limit})
        return [msgspec.convert(row, TraceRecord) for row in rows]

    def has(self, call_ids: Sequence[str]) -> set[str]:
        """Which of these Call-IDs have a trace."""
        if not call_ids:
            return set()
        rows = self.backend.query(f"SELECT DISTINCT call_id FROM {TABLE} WHERE call_id IN {{ids}}",
                                  {"ids": list(call_ids)})
        return {row[0] for row in rows}

    def accounts_of(self, call_id: str) -> set[str]:
        """The accounts of the CDRs of a Call-ID (who may read its trace besides admins)."""
        rows = self.backend.query("SELECT DISTINCT account FROM cdr WHERE call_id = {call_id}",
                                  {"call_id": call_id})
        return {row[0] for row in rows}

    def drop_older_than(self, days: int, now_ms: int | None = None) -> list[str]:
        """Drop whole days older than ``days`` (18.16 has no TTL); returns the partitions dropped."""
        now = datetime.fromtimestamp((clock.now_ms() if now_ms is None else now_ms) / 1000, timezone.utc)
        cutoff = int((now - timedelta(days=days)).strftime("%Y%m%d"))
        rows = self.backend.query(
            "SELECT DISTINCT partition FROM system.parts WHERE database = {db} AND table = {table} AND active",
            {"db": getattr(self.backend, "database", "sipledger"), "table": TABLE})
        dropped = []
        for (partition,) in rows:
            day = str(partition).strip("'")
            if day.isdigit() and int(day) < cutoff:
                self.backend.execute(f"ALTER TABLE {TABLE} DROP PARTITION {int(day)}")
                dropped.append(day)
        return sorted(dropped)


class TraceRetention(Periodic):
    """Drops old sip_trace days now and then (the API process, api/sinks.py)."""

    def __init__(self, store: TraceStore, days: int, interval_s: float = 3600.0) -> None:
        self.store, self.days = store, days
        super().__init__("sip_trace retention", self._once, interval_s)

    def _once(self) -> None:
        dropped = self.store.drop_older_than(self.days)
        if dropped:
            log.info("sip_trace: dropped days %s (older than %d days)", ", ".join(dropped), self.days)
