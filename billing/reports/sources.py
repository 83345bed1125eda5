"""Where report rows come from: the SQL ledger (the CLI) or its ClickHouse copy (the API process).

The same report code (billing/reports/build.py) runs on both, so a statement
downloaded from the REST API and one written by ``sipledger report`` are the
same numbers.  A source gives events as dicts (the ``LedgerEvent`` fields plus
``balance_delta``), money as exact Decimals, in ledger order, in pages.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Protocol

from billing.ledger.fold import balance_delta
from billing.money import ZERO
from proxy.contract.ledger import LedgerEvent

__all__ = ["Source", "SqliteSource", "ClickHouseSource", "load_events", "BALANCE_KINDS", "CHUNK", "Progress",
           "no_progress"]

BALANCE_KINDS = ("topup", "adjustment", "refund", "debit", "rerate")      # what moves a balance (reports list these)
CHUNK = 20_000
Progress = Callable[[int, int | None], None]       # (rows done, rows total or None)


def no_progress(done: int, total: int | None) -> None:
    pass


class Source(Protocol):
    def events(self, *, account: str | None, from_ms: int | None, to_ms: int | None,
               time_field: str, kinds: list[str], after_seq: int, limit: int) -> list[dict]: ...

    def opening_balance(self, account: str, before_ms: int | None) -> Decimal: ...


def _as_dict(event: LedgerEvent) -> dict:
    data = {name: getattr(event, name) for name in LedgerEvent.__struct_fields__}
    data["balance_delta"] = balance_delta(event)
    return data


class SqliteSource:
    """The durable ledger (billing/ledger/store.py): the source of truth."""

    def __init__(self, store):
        self.store = store

    def events(self, *, account, from_ms, to_ms, time_field, kinds, after_seq, limit):
        return [_as_dict(e) for e in self.store.events(
            account=account, from_ms=from_ms, to_ms=to_ms, time_field=time_field, kinds=kinds,
            after_seq=after_seq, limit=limit)]

    def opening_balance(self, account, before_ms):
        if before_ms is None:
            return ZERO
        total = ZERO
        after = 0
        while True:
            page = self.store.events(account=account, to_ms=before_ms, kinds=BALANCE_KINDS,
                                     after_seq=after, limit=CHUNK)
            for e in page:
                total += balance_delta(e)
            if len(page) < CHUNK:
                return total
            after = page[-1].seq


class ClickHouseSource:
    """The ClickHouse copy (billing/ledger/clickhouse.py); sums are Decimal(38,6), exact."""

    def __init__(self, queries):
        self.queries = queries

    def events(self, *, account, from_ms, to_ms, time_field, kinds, after_seq, limit):
        return self.queries.events(account=account, from_ms=from_ms, to_ms=to_ms,
                                   time_field=time_field, kinds=kinds, after_seq=after_seq, limit=limit)

    def opening_balance(self, account, before_ms):
        if before_ms is None:
            return ZERO
        return self.queries.balance_before(account, before_ms)


def load_events(source: Source, *, account: str | None, from_ms: int | None, to_ms: int | None,
                time_field: str = "ts_ms", kinds: Iterable[str] = BALANCE_KINDS,
                progress: Progress = no_progress) -> list[dict]:
    """Every matching event, in ledger order, read in chunks."""
    rows: list[dict] = []
    after = 0
    kinds = list(kinds)
    while True:
        page = source.events(account=account, from_ms=from_ms, to_ms=to_ms, time_field=time_field,
                             kinds=kinds, after_seq=after, limit=CHUNK)
        rows.extend(page)
        progress(len(rows), None)
        if len(page) < CHUNK:
            return rows
        after = page[-1]["seq"]
