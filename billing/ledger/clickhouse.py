"""The ClickHouse copy of the ledger: table ``ledger_events`` (proxy/infra/clickhouse/schema.sql,
migration 2), its sink from Kafka and its repair from SQLite.  Runs in the API
process, which owns ClickHouse (chdb: one process per data path).

* ``LedgerSink``: ``ledger.events`` (LedgerEvent JSON, proxy/contract/ledger.py,
  key = account) -> ``ledger_events``, batched, offsets committed after the
  insert (the shared topic sink, proxy/infra/clickhouse/sink.py).
* ``LedgerRepair``: the broker is memory only, so records it lost before the
  sink read them never arrive.  Every ``[ledger] repair_seconds`` (and at
  start) the copy is compared with the SQLite ledger -- the source of truth --
  per range of ``seq`` (counts), and missing ranges are inserted again from
  SQLite (duplicates collapse: the table is a ReplacingMergeTree on
  (account, seq)).
* ``LedgerQueries``: history pages, report rows and opening balances, money
  read back as exact Decimals (Arrow decimal128 from chdb, Decimal from
  clickhouse-driver).
"""
from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from proxy.contract.ledger import LedgerEvent
from proxy.infra import clock
from proxy.infra.clickhouse.backend import Backend, BackendError
from proxy.infra.clickhouse.sink import TopicSink

from .fold import balance_delta, reserved_delta
from .store import LedgerStore

__all__ = ["TABLE", "COLUMNS", "EVENT_SELECT", "columns_for", "row_event", "LedgerQueries", "LedgerSink", "LedgerRepair"]

log = logging.getLogger("sipledger.billing.ledger")

TABLE = "ledger_events"
COLUMNS = ("seq", "id", "account", "kind", "amount", "balance_delta", "reserved_delta", "currency",
           "ts", "ts_ms", "call_id", "cdr_id", "leg", "idem_key", "step", "final", "paid_ms",
           "answer_ms", "number", "plan", "prefix", "rate_name", "gateway", "duration_ms", "billed_s",
           "note", "version")
# what a query gives back per event (LedgerEvent's fields + the derived deltas)
EVENT_SELECT = ("seq, id, account, kind, amount, balance_delta, reserved_delta, currency, ts_ms, "
                "call_id, cdr_id, leg, idem_key AS key, step, final, paid_ms, answer_ms, number, plan, "
                "prefix, rate_name, gateway, duration_ms, billed_s, note")
REPAIR_CHUNK = 10_000


# columns that are not the event field of the same name
_DERIVED: dict[str, Callable[[LedgerEvent], Any]] = {
    "balance_delta": balance_delta,
    "reserved_delta": reserved_delta,
    "ts": lambda ev: ev.ts_ms // 1000,
    "idem_key": lambda ev: ev.key,
    "final": lambda ev: 1 if ev.final else 0,
}


def columns_for(events: Iterable[LedgerEvent]) -> dict[str, list]:
    """The events as columns of ``ledger_events`` (a columnar insert)."""
    rows = list(events)
    version = clock.now_ms()                  # the newest copy of a row wins (ReplacingMergeTree)
    cols: dict[str, list] = {}
    for name in COLUMNS:
        if name == "version":
            cols[name] = [version] * len(rows)
        else:
            value = _DERIVED.get(name, operator.attrgetter(name))
            cols[name] = [value(ev) for ev in rows]
    return cols


def row_event(row: dict[str, Any]) -> dict[str, Any]:
    """A ``SELECT EVENT_SELECT`` row as a LedgerEvent's fields, money as exact Decimals."""
    out = dict(row)
    for money in ("amount", "balance_delta", "reserved_delta"):
        value = out[money]
        out[money] = value if isinstance(value, Decimal) else Decimal(str(value))
    out["final"] = bool(out["final"])
    return out


class LedgerQueries:
    def __init__(self, backend: Backend):
        self.backend = backend

    def insert(self, events: list[LedgerEvent]) -> int:
        if not events:
            return 0
        return self.backend.insert(TABLE, columns_for(events))

    def history(self, account: str, *, limit: int = 100, before_seq: int | None = None,
                from_ms: int | None = None, to_ms: int | None = None,
                kinds: list[str] | None = None) -> list[dict[str, Any]]:
        """Events of one account, newest first (``before_seq``: the cursor)."""
        where = ["account = {account}"]
        params: dict[str, Any] = {"account": account, "limit": limit}
        if before_seq is not None:
            where.append("seq < {before}")
            params["before"] = before_seq
        if from_ms is not None:
            where.append("ts_ms >= {from_ms}")
            params["from_ms"] = from_ms
        if to_ms is not None:
            where.append("ts_ms < {to_ms}")
            params["to_ms"] = to_ms
        if kinds:
            where.append("kind IN {kinds}")
            params["kinds"] = list(kinds)
        sql = (f"SELECT {EVENT_SELECT} FROM {TABLE} WHERE {' AND '.join(where)} "
               "ORDER BY seq DESC LIMIT 1 BY seq LIMIT {limit}")
        return [row_event(r) for r in self.backend.query_dicts(sql, params)]

    def events(self, *, account: str | None = None, from_ms: int | None = None,
               to_ms: int | None = None, time_field: str = "ts_ms", kinds: list[str] | None = None,
               after_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Events in ledger order (reports)."""
        where = ["seq > {after}"]
        params: dict[str, Any] = {"after": after_seq}
        if account is not None:
            where.append("account = {account}")
            params["account"] = account
        if time_field not in ("ts_ms", "answer_ms"):
            raise ValueError(f"time_field {time_field!r}")
        if from_ms is not None:
            where.append(f"{time_field} >= {{from_ms}}")
            params["from_ms"] = from_ms
        if to_ms is not None:
            where.append(f"{time_field} < {{to_ms}}")
            params["to_ms"] = to_ms
        if kinds:
            where.append("kind IN {kinds}")
            params["kinds"] = list(kinds)
        sql = (f"SELECT {EVENT_SELECT} FROM {TABLE} WHERE {' AND '.join(where)} "
               "ORDER BY seq LIMIT 1 BY seq")
        if limit is not None:
            sql += " LIMIT {limit}"
            params["limit"] = limit
        return [row_event(r) for r in self.backend.query_dicts(sql, params)]

    def balance_before(self, account: str, before_ms: int) -> Decimal:
        """The account's balance from its events booked before ``before_ms`` (exact)."""
        rows = self.backend.query(
            "SELECT sum(balance_delta) FROM (SELECT seq, any(balance_delta) AS balance_delta "
            f"FROM {TABLE} WHERE account = {{account}} AND ts_ms < {{before}} GROUP BY seq)",
            {"account": account, "before": before_ms})
        value = rows[0][0] if rows and rows[0][0] is not None else Decimal(0)
        return value if isinstance(value, Decimal) else Decimal(str(value))

    def seq_counts(self, low: int, high: int) -> dict[int, int]:
        """Distinct seqs stored per chunk (chunk = seq // REPAIR_CHUNK) in (low, high]."""
        rows = self.backend.query(
            f"SELECT intDiv(seq, {REPAIR_CHUNK}) AS chunk, uniqExact(seq) FROM {TABLE} "
            "WHERE seq > {low} AND seq <= {high} GROUP BY chunk", {"low": low, "high": high})
        return {int(chunk): int(count) for chunk, count in rows}

    def max_seq(self) -> int:
        rows = self.backend.query(f"SELECT max(seq) FROM {TABLE}")
        return int(rows[0][0] or 0) if rows else 0


class LedgerSink(TopicSink[LedgerEvent]):
    """The shared topic → ClickHouse loop for ``ledger.events``."""

    def __init__(self, queries: LedgerQueries, kafka, *, topic: str, group_id: str,
                 batch_rows: int = 5000, batch_ms: int = 200, partitions: int | None = None):
        super().__init__(LedgerEvent, queries.insert, kafka, topic=topic, group_id=group_id,
                         problem=_unsequenced, batch_rows=batch_rows, batch_ms=batch_ms,
                         partitions=partitions)


def _unsequenced(event: LedgerEvent) -> str | None:
    return "ledger event without seq" if event.seq <= 0 else None


class LedgerRepair:
    """Makes the ClickHouse copy hold every event of the SQLite ledger."""

    def __init__(self, queries: LedgerQueries, store: LedgerStore, *, interval_s: float = 30.0):
        self.queries = queries
        self.store = store
        self.interval_s = interval_s
        self.repaired = 0
        self.runs = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def repair_once(self, upto_seq: int | None = None) -> int:
        """Insert the events ClickHouse lacks (up to ``upto_seq``, default all);
        returns how many were (re)inserted."""
        high = self.store.max_seq() if upto_seq is None else upto_seq
        if high == 0:
            return 0
        stored = self.queries.seq_counts(0, high)
        self.runs += 1
        if sum(stored.values()) >= self.store.count_events(upto_seq=high):
            return 0                                  # the usual case: nothing missing
        inserted = 0
        for chunk in range(high // REPAIR_CHUNK + 1):
            low_seq, high_seq = chunk * REPAIR_CHUNK - 1, min(high, (chunk + 1) * REPAIR_CHUNK - 1)
            expected = self.store.count_events(from_seq=max(0, low_seq), upto_seq=high_seq)
            if stored.get(chunk, 0) >= expected:
                continue
            events = self.store.events(after_seq=max(0, low_seq), limit=REPAIR_CHUNK)
            events = [e for e in events if e.seq <= high_seq]
            inserted += self.queries.insert(events)
        self.repaired += inserted
        if inserted:
            log.warning("ledger repair: re-inserted %d events ClickHouse was missing", inserted)
        return inserted

    async def run(self) -> None:
        """Each pass repairs up to the ledger's end as the *previous* pass saw it:
        events get one interval to arrive through Kafka before they count as lost."""
        seen: int | None = None
        delay = min(5.0, self.interval_s)
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return
            except asyncio.TimeoutError:
                pass
            delay = self.interval_s
            try:
                high = await asyncio.to_thread(self.store.max_seq)
                if seen:
                    await asyncio.to_thread(self.repair_once, seen)
                seen = high
            except (BackendError, Exception) as exc:      # noqa: BLE001 - next round retries
                log.warning("ledger repair failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
