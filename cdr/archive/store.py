"""The ``events`` table (schema.sql migration 5): archived records in, a call's events out.

A record is archived as published: ``payload`` is its JSON, the other columns
are what reads select on.  The identity is the event ``id``; every read
collapses copies (``LIMIT 1 BY id``), so at-least-once archiving and the
republishing after a broker restart never show twice.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

import msgspec
import pyarrow as pa

from proxy.infra.clickhouse.backend import Backend

__all__ = ["Archived", "ArchiveStore", "SOURCES", "TABLE", "problem"]

TABLE = "events"
SOURCES = ("sip", "ledger", "control")       # sip.events, ledger.events, call.control
MAX_S = 2**32 - 1                           # `ts` is DateTime (UInt32 seconds)
_MAX_TS_MS = MAX_S * 1000
MAX_ID_CHARS = 128


class Archived(msgspec.Struct, frozen=True):
    """One archived record: the columns of ``events``.  ``payload`` is the
    record's value as published, UTF-8 JSON (``archive.sink.archived`` checks
    the UTF-8): kept as bytes, the column is built from them without a str per
    record (``payload_column``)."""
    ts_ms: int
    source: str
    type: str
    id: str
    call_id: str
    account: str
    payload: bytes


def problem(record: Archived) -> str | None:
    """Why a record cannot be archived (the sink logs and skips it), or None."""
    if not record.id or len(record.id) > MAX_ID_CHARS:
        return "no usable event id"
    if not 0 <= record.ts_ms <= _MAX_TS_MS:
        return f"ts_ms={record.ts_ms} outside 0..{_MAX_TS_MS}"
    return None


def payload_column(payloads: Sequence[bytes]) -> pa.Array | pa.ChunkedArray:
    """UTF-8 values as an Arrow string column made of their joined bytes and
    offsets: no Python str per record (``pa.array`` of ~330-character strs costs
    ~2 us a record, this ~0.2).  Raises ValueError on bytes that are not UTF-8."""
    try:
        offsets = array("i", accumulate(map(len, payloads), initial=0))
    except OverflowError:       # 2 GiB or more in one insert: Arrow chunks it
        return pa.array([value.decode("utf-8") for value in payloads], pa.string())
    column = pa.Array.from_buffers(pa.string(), len(payloads),
                                   [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(payloads))])
    try:
        column.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"archive payloads: {exc}") from None
    return column


def to_columns(records: Sequence[Archived], *, arrow_payload: bool = True
               ) -> dict[str, list | pa.Array | pa.ChunkedArray]:
    """``events`` columns; ``arrow_payload`` False keeps the payloads as bytes
    (a server's driver writes bytes as they are, where an Arrow column would be
    turned back into a str per record)."""
    ts_ms = [r.ts_ms for r in records]
    payloads = [r.payload for r in records]
    return {
        "ts": [ms // 1000 for ms in ts_ms],
        "ts_ms": ts_ms,
        "source": [r.source for r in records],
        "type": [r.type for r in records],
        "id": [r.id for r in records],
        "call_id": [r.call_id for r in records],
        "account": [r.account for r in records],
        "payload": payload_column(payloads) if arrow_payload else payloads,
    }


@dataclass
class ArchiveStore:
    backend: Backend

    def insert(self, records: Sequence[Archived]) -> int:
        if not records:
            return 0
        return self.backend.insert(TABLE, to_columns(records, arrow_payload=self.backend.kind == "chdb"))

    def first_calls(self, from_ms: int, to_ms: int, span_ms: int) -> list[str]:
        """Call-IDs whose first ``sip.events`` record lies in [from_ms, to_ms):
        a call belongs to the range of its first event.  ``span_ms``: how long
        before ``from_ms`` a call can have started and still have events inside
        (the longest call), so the scan stays within days that can matter."""
        sql = ("SELECT call_id FROM events "
               "WHERE source = 'sip' AND ts >= toDateTime({lo_s}) AND ts < toDateTime({hi_s}) "
               "AND call_id IN (SELECT call_id FROM events WHERE source = 'sip' "
               "AND ts >= toDateTime({from_s}) AND ts < toDateTime({hi_s}) "
               "AND ts_ms >= {from_ms} AND ts_ms < {to_ms}) "
               "GROUP BY call_id HAVING min(ts_ms) >= {from_ms} AND min(ts_ms) < {to_ms} "
               "ORDER BY call_id")
        params = {"lo_s": max(0, from_ms - span_ms) // 1000, "from_s": from_ms // 1000,
                  "hi_s": min(to_ms // 1000 + 1, MAX_S), "from_ms": from_ms, "to_ms": to_ms}
        return [row[0] for row in self.backend.query(sql, params)]

    def time_span(self, from_ms: int, to_ms: int) -> tuple[int, int] | None:
        """(first, last) ``ts_ms`` of the archived sip.events in [from_ms, to_ms), None if none."""
        rows = self.backend.query(
            "SELECT count(), min(ts_ms), max(ts_ms) FROM events WHERE source = 'sip' "
            "AND ts >= toDateTime({from_s}) AND ts < toDateTime({hi_s}) "
            "AND ts_ms >= {from_ms} AND ts_ms < {to_ms}",
            {"from_s": from_ms // 1000, "hi_s": min(to_ms // 1000 + 1, MAX_S),
             "from_ms": from_ms, "to_ms": to_ms})
        if not rows or not rows[0][0]:
            return None
        return int(rows[0][1]), int(rows[0][2])

    def call_events(self, call_ids: Sequence[str], from_ms: int, until_ms: int
                    ) -> Iterator[tuple[str, list[bytes]]]:
        """Each call's ``sip.events`` payloads in [from_ms, until_ms), one copy per
        event id, ordered by time then id (the order a rebuild folds them in)."""
        if not call_ids:
            return
        sql = ("SELECT call_id, payload FROM events "
               "WHERE source = 'sip' AND ts >= toDateTime({lo_s}) AND ts < toDateTime({hi_s}) "
               "AND call_id IN {calls} "
               "ORDER BY call_id, ts_ms, id LIMIT 1 BY call_id, id")
        params = {"lo_s": from_ms // 1000, "hi_s": min(until_ms // 1000 + 1, MAX_S), "calls": list(call_ids)}
        current: str | None = None
        payloads: list[bytes] = []
        for call_id, payload in self.backend.query(sql, params):
            if call_id != current:
                if current is not None:
                    yield current, payloads
                current, payloads = call_id, []
            payloads.append(payload.encode() if isinstance(payload, str) else payload)
        if current is not None:
            yield current, payloads

    def count(self, source: str | None = None) -> tuple[int, int]:
        """(distinct event ids, rows) archived, of one source or all."""
        where = "WHERE source = {source}" if source else ""
        rows = self.backend.query(f"SELECT uniqExact(id), count() FROM events {where}",
                                  {"source": source} if source else None)
        return int(rows[0][0]), int(rows[0][1])

    def bytes_on_disk(self) -> tuple[int, int]:
        """(compressed bytes on disk, rows) of the active parts of ``events``."""
        rows = self.backend.query(
            "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts "
            "WHERE database = {db} AND table = 'events' AND active", {"db": self.backend.database})
        return int(rows[0][0] or 0), int(rows[0][1] or 0)
