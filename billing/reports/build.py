"""Billing reports with pandas: statement, per-destination and per-gateway
summaries, monthly invoice data -- exported as CSV, Parquet or XLSX with exact money.

Money stays ``decimal.Decimal`` end to end: DataFrame money columns are
``object`` columns of Decimals (never float64); CSV writes them as plain
decimal text, Parquet as ``decimal128(18, 6)``, XLSX as text cells (an XLSX
number is a double).  ``read_export`` reads any of them back into Decimals.

Sources.  The same report code runs on the SQLite ledger (``SqliteSource``,
the CLI; the source of truth) and on the ClickHouse copy
(``ClickHouseSource``, the API process).  Periods are ``[from, to)`` epoch ms:

* statement and invoice: by booking time (``ts_ms``), so
  opening balance + movements = closing balance exactly;
* destinations and gateways: debits by call answer time (``answer_ms``).

Reservations and releases are credit holds, not money movements: no report
lists them.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from billing.ledger.fold import balance_delta
from billing.money import ZERO, money_text
from proxy.contract.ledger import LedgerEvent

__all__ = ["REPORTS", "FORMATS", "Report", "SqliteSource", "ClickHouseSource", "build_report",
           "write_report", "report_bytes", "read_export", "MONEY_COLUMNS", "CONTENT_TYPES"]

REPORTS = ("statement", "destinations", "gateways", "invoice")
FORMATS = ("csv", "parquet", "xlsx")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
MONEY_COLUMNS = ("amount", "balance", "cost", "debit", "credit")
MONEY_KINDS = ("topup", "adjustment", "refund", "debit")
CHUNK = 20_000
Progress = Callable[[int, int | None], None]       # (rows done, rows total or None)


def _no_progress(done: int, total: int | None) -> None:
    pass


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z") if ms else ""


def _as_dict(event: LedgerEvent | dict) -> dict:
    if isinstance(event, dict):
        return event
    data = {name: getattr(event, name) for name in LedgerEvent.__struct_fields__}
    data["balance_delta"] = balance_delta(event)
    return data


# -- where events come from ------------------------------------------------------------------

class Source(Protocol):
    def events(self, *, account: str | None, from_ms: int | None, to_ms: int | None,
               time_field: str, kinds: list[str], after_seq: int, limit: int) -> list[dict]: ...

    def opening_balance(self, account: str, before_ms: int | None) -> Decimal: ...


class SqliteSource:
    """The durable ledger (billing/store.py)."""

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
            page = self.store.events(account=account, to_ms=before_ms, kinds=MONEY_KINDS,
                                     after_seq=after, limit=CHUNK)
            for e in page:
                total += balance_delta(e)
            if len(page) < CHUNK:
                return total
            after = page[-1].seq


class ClickHouseSource:
    """The ClickHouse copy (billing/chledger.py); sums are Decimal(38,6), exact."""

    def __init__(self, queries):
        self.queries = queries

    def events(self, *, account, from_ms, to_ms, time_field, kinds, after_seq, limit):
        return self.queries.events(account=account, from_ms=from_ms, to_ms=to_ms,
                                   time_field=time_field, kinds=kinds, after_seq=after_seq, limit=limit)

    def opening_balance(self, account, before_ms):
        if before_ms is None:
            return ZERO
        rows = self.queries.backend.query(
            "SELECT sum(balance_delta) FROM (SELECT seq, any(balance_delta) AS balance_delta "
            "FROM ledger_events WHERE account = {account} AND ts_ms < {before} GROUP BY seq)",
            {"account": account, "before": before_ms})
        value = rows[0][0] if rows and rows[0][0] is not None else ZERO
        return value if isinstance(value, Decimal) else Decimal(str(value))


def load_events(source: Source, *, account: str | None, from_ms: int | None, to_ms: int | None,
                time_field: str = "ts_ms", kinds: Iterable[str] = MONEY_KINDS,
                progress: Progress = _no_progress) -> list[dict]:
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


# -- the reports -----------------------------------------------------------------------------

@dataclass
class Report:
    name: str
    frame: pd.DataFrame
    meta: dict[str, str] = field(default_factory=dict)     # account, period, totals (text)

    @property
    def money_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c in MONEY_COLUMNS]


def _describe(e: dict) -> str:
    kind = e["kind"]
    if kind == "debit":
        rate = e.get("rate_name") or e.get("prefix") or "*"
        return f"call to {e.get('number', '')} ({rate}), {e.get('billed_s', 0)} s billed"
    if kind == "topup":
        return "top-up" + (f": {e['note']}" if e.get("note") else "")
    return f"{kind}" + (f": {e['note']}" if e.get("note") else "")


def _reference(e: dict) -> str:
    if e["kind"] == "debit":
        return f"{e.get('cdr_id', '')}/{e.get('leg', '')}"
    return e.get("key", "")


def statement(source: Source, account: str, from_ms: int | None, to_ms: int | None, *,
              progress: Progress = _no_progress) -> Report:
    opening = source.opening_balance(account, from_ms)
    events = load_events(source, account=account, from_ms=from_ms, to_ms=to_ms, progress=progress)
    rows = [{"seq": 0, "time": _iso(from_ms or 0), "kind": "opening", "description": "opening balance",
             "reference": "", "currency": "", "amount": ZERO, "balance": opening}]
    balance = opening
    currency = ""
    for e in events:
        delta = e["balance_delta"]
        balance += delta
        currency = e["currency"]
        rows.append({"seq": int(e["seq"]), "time": _iso(e["ts_ms"]), "kind": e["kind"],
                     "description": _describe(e), "reference": _reference(e), "currency": e["currency"],
                     "amount": delta, "balance": balance})
    rows.append({"seq": 0, "time": _iso(to_ms or 0), "kind": "closing", "description": "closing balance",
                 "reference": "", "currency": currency, "amount": balance - opening, "balance": balance})
    for row in rows:
        row["currency"] = row["currency"] or currency
    frame = pd.DataFrame(rows, columns=["seq", "time", "kind", "description", "reference", "currency",
                                        "amount", "balance"])
    return Report("statement", _money_objects(frame), {
        "account": account, "from": _iso(from_ms or 0), "to": _iso(to_ms or 0),
        "opening_balance": money_text(opening), "closing_balance": money_text(balance)})


def _summary(source: Source, account: str | None, from_ms, to_ms, keys: list[str], progress) -> pd.DataFrame:
    debits = load_events(source, account=account, from_ms=from_ms, to_ms=to_ms, time_field="answer_ms",
                         kinds=["debit"], progress=progress)
    groups: dict[tuple, dict] = {}
    for e in debits:
        key = tuple(e.get(k, "") or "" for k in keys) + (e["currency"],)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"calls": 0, "duration_ms": 0, "billed_s": 0, "cost": ZERO}
        g["calls"] += 1
        g["duration_ms"] += int(e["duration_ms"])
        g["billed_s"] += int(e["billed_s"])
        g["cost"] += e["amount"]
    rows = []
    for key, g in sorted(groups.items(), key=lambda kv: (-kv[1]["cost"], kv[0])):
        row = dict(zip(keys + ["currency"], key))
        row.update(calls=g["calls"], minutes=_minutes(g["duration_ms"]), billed_s=g["billed_s"],
                   cost=g["cost"])
        rows.append(row)
    return pd.DataFrame(rows, columns=keys + ["currency", "calls", "minutes", "billed_s", "cost"])


def _minutes(ms: int) -> str:
    """Usage in minutes, exact, as text (ms / 60000 to 3 decimals, rounded half up)."""
    value = (Decimal(ms) / Decimal(60000)).quantize(Decimal("0.001"))
    return money_text(value)


def destinations(source: Source, account: str | None, from_ms, to_ms, *,
                 progress: Progress = _no_progress) -> Report:
    frame = _summary(source, account, from_ms, to_ms, ["prefix", "rate_name"], progress)
    total = sum(frame["cost"], ZERO) if len(frame) else ZERO
    return Report("destinations", _money_objects(frame), {
        "account": account or "(all)", "from": _iso(from_ms or 0), "to": _iso(to_ms or 0),
        "total_cost": money_text(total)})


def gateways(source: Source, account: str | None, from_ms, to_ms, *,
             progress: Progress = _no_progress) -> Report:
    frame = _summary(source, account, from_ms, to_ms, ["gateway"], progress)
    if len(frame):
        frame["gateway"] = frame["gateway"].replace("", "(direct)")
    total = sum(frame["cost"], ZERO) if len(frame) else ZERO
    return Report("gateways", _money_objects(frame), {
        "account": account or "(all)", "from": _iso(from_ms or 0), "to": _iso(to_ms or 0),
        "total_cost": money_text(total)})


def invoice(source: Source, account: str, from_ms: int | None, to_ms: int | None, *,
            info: Any = None, progress: Progress = _no_progress) -> Report:
    """Invoice data for a period (a calendar month for postpaid accounts):
    opening balance, charges per destination, credits, closing balance, amount due."""
    opening = source.opening_balance(account, from_ms)
    events = load_events(source, account=account, from_ms=from_ms, to_ms=to_ms, progress=progress)
    charges: dict[tuple, dict] = {}
    credits: list[dict] = []
    currency = getattr(info, "currency", "") or ""
    for e in events:
        currency = e["currency"] or currency
        if e["kind"] == "debit":
            key = (e.get("prefix", ""), e.get("rate_name", ""))
            g = charges.setdefault(key, {"calls": 0, "billed_s": 0, "debit": ZERO})
            g["calls"] += 1
            g["billed_s"] += int(e["billed_s"])
            g["debit"] += e["amount"]
        else:
            credits.append(e)
    rows = [{"section": "opening", "description": "opening balance", "calls": 0, "billed_s": 0,
             "debit": ZERO, "credit": ZERO, "balance": opening}]
    total_debit = total_credit = ZERO
    for (prefix, name), g in sorted(charges.items()):
        total_debit += g["debit"]
        rows.append({"section": "charges", "description": f"{name or 'calls'} ({prefix or '*'})",
                     "calls": g["calls"], "billed_s": g["billed_s"], "debit": g["debit"],
                     "credit": ZERO, "balance": ZERO})
    for e in credits:
        delta = e["balance_delta"]
        if delta >= 0:
            total_credit += delta
            debit, credit = ZERO, delta
        else:
            total_debit += -delta
            debit, credit = -delta, ZERO
        rows.append({"section": e["kind"], "description": f"{_describe(e)} {_iso(e['ts_ms'])}".strip(),
                     "calls": 0, "billed_s": 0, "debit": debit, "credit": credit, "balance": ZERO})
    closing = opening - total_debit + total_credit
    rows.append({"section": "total", "description": "total", "calls": sum(g["calls"] for g in charges.values()),
                 "billed_s": sum(g["billed_s"] for g in charges.values()), "debit": total_debit,
                 "credit": total_credit, "balance": closing})
    due = -closing if closing < 0 else ZERO
    frame = pd.DataFrame(rows, columns=["section", "description", "calls", "billed_s", "debit", "credit",
                                        "balance"])
    meta = {"account": account, "from": _iso(from_ms or 0), "to": _iso(to_ms or 0), "currency": currency,
            "opening_balance": money_text(opening), "charges": money_text(total_debit),
            "credits": money_text(total_credit), "closing_balance": money_text(closing),
            "amount_due": money_text(due)}
    if info is not None:
        meta.update(kind=info.kind, credit_limit=money_text(info.credit_limit))
    return Report("invoice", _money_objects(frame), meta)


def _money_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Money columns as object columns of Decimal (never float)."""
    for column in frame.columns:
        if column in MONEY_COLUMNS:
            frame[column] = pd.Series([Decimal(v) if not isinstance(v, Decimal) else v
                                       for v in frame[column]], index=frame.index, dtype=object)
    return frame


def build_report(name: str, source: Source, *, account: str | None, from_ms: int | None,
                 to_ms: int | None, info: Any = None, progress: Progress = _no_progress) -> Report:
    if name == "statement":
        return statement(source, _need(account), from_ms, to_ms, progress=progress)
    if name == "destinations":
        return destinations(source, account, from_ms, to_ms, progress=progress)
    if name == "gateways":
        return gateways(source, account, from_ms, to_ms, progress=progress)
    if name == "invoice":
        return invoice(source, _need(account), from_ms, to_ms, info=info, progress=progress)
    raise ValueError(f"unknown report {name!r}; one of {', '.join(REPORTS)}")


def _need(account: str | None) -> str:
    if not account:
        raise ValueError("this report needs an account")
    return account


# -- export ----------------------------------------------------------------------------------

def _text_rows(report: Report) -> Iterator[list]:
    money = set(report.money_columns)
    columns = list(report.frame.columns)
    for values in report.frame.itertuples(index=False, name=None):
        yield [money_text(v) if c in money else v for c, v in zip(columns, values)]


def _csv_chunks(report: Report, progress: Progress) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(report.frame.columns))
    total = len(report.frame)
    for i, row in enumerate(_text_rows(report), 1):
        writer.writerow(row)
        if i % CHUNK == 0:
            progress(i, total)
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    progress(total, total)
    yield buffer.getvalue().encode()


def _arrow_table(report: Report):
    import pyarrow as pa
    columns = {}
    for name in report.frame.columns:
        values = list(report.frame[name])
        if name in MONEY_COLUMNS:
            columns[name] = pa.array(values, type=pa.decimal128(18, 6))
        else:
            columns[name] = pa.array(values)
    metadata = {f"sipledger.{k}": str(v) for k, v in report.meta.items()}
    metadata["sipledger.report"] = report.name
    return pa.table(columns).replace_schema_metadata(metadata)


def _write_parquet(report: Report, sink, progress: Progress) -> None:
    import pyarrow.parquet as pq
    table = _arrow_table(report)
    total = table.num_rows
    with pq.ParquetWriter(sink, table.schema) as writer:
        for start in range(0, max(total, 1), CHUNK):
            writer.write_table(table.slice(start, CHUNK))
            progress(min(total, start + CHUNK), total)


def _write_xlsx(report: Report, sink, progress: Progress) -> None:
    from openpyxl import Workbook
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(report.name)
    sheet.append(list(report.frame.columns))
    total = len(report.frame)
    for i, row in enumerate(_text_rows(report), 1):
        sheet.append(row)                   # money as text cells: exact
        if i % CHUNK == 0:
            progress(i, total)
    info = workbook.create_sheet("info")
    info.append(["key", "value"])
    info.append(["report", report.name])
    for key, value in report.meta.items():
        info.append([key, str(value)])
    workbook.save(sink)
    progress(total, total)


def write_report(report: Report, path: str | Path, fmt: str, *, progress: Progress = _no_progress) -> int:
    """Write ``report`` to ``path``; returns the rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    path = Path(path)
    if fmt == "csv":
        with open(path, "wb") as out:
            for chunk in _csv_chunks(report, progress):
                out.write(chunk)
    elif fmt == "parquet":
        _write_parquet(report, str(path), progress)
    else:
        _write_xlsx(report, str(path), progress)
    return len(report.frame)


def report_bytes(report: Report, fmt: str) -> Iterator[bytes]:
    """The export as a stream of byte chunks (the API's streamed download)."""
    if fmt == "csv":
        yield from _csv_chunks(report, _no_progress)
        return
    buffer = io.BytesIO()
    if fmt == "parquet":
        _write_parquet(report, buffer, _no_progress)
    elif fmt == "xlsx":
        _write_xlsx(report, buffer, _no_progress)
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    view = buffer.getbuffer()
    for start in range(0, len(view), 1 << 16):
        yield bytes(view[start:start + (1 << 16)])


def read_export(path_or_bytes: str | Path | bytes, fmt: str) -> pd.DataFrame:
    """An export read back, money columns as Decimal (round-trip checks, tooling)."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        handle: Any = io.BytesIO(path_or_bytes)
    else:
        handle = str(path_or_bytes)
    if fmt == "csv":
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
        for column in frame.columns:
            if column in MONEY_COLUMNS:
                frame[column] = pd.Series([Decimal(v) for v in frame[column]], dtype=object)
        return frame
    if fmt == "parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(handle)
        return pd.DataFrame({name: pd.Series(table.column(name).to_pylist(), dtype=object)
                             for name in table.column_names})
    if fmt == "xlsx":
        from openpyxl import load_workbook
        workbook = load_workbook(handle, read_only=True)
        sheet = workbook.worksheets[0]
        rows = list(sheet.iter_rows(values_only=True))
        frame = pd.DataFrame([list(r) for r in rows[1:]], columns=list(rows[0]), dtype=object)
        for column in frame.columns:
            if column in MONEY_COLUMNS:
                frame[column] = pd.Series([Decimal(v) for v in frame[column]], dtype=object)
        return frame
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")
