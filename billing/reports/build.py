"""The billing reports: statement, per-destination and per-gateway summaries, invoice data.

Each report is a pandas DataFrame plus a typed column schema (a pyarrow
schema, ``SCHEMAS``) that the exports follow (billing/reports/export.py):
money is ``decimal128(18, 6)`` -- the ledger's scale -- and is kept as
``decimal.Decimal`` objects in the frame (an ``object`` column, never
float64), usage minutes are ``decimal128(18, 3)`` (exact ms / 60000), counts
and seconds ``int64``.

Periods are ``[from, to)`` epoch ms:

* statement and invoice: by booking time (``ts_ms``), so
  opening balance + movements = closing balance exactly;
* destinations and gateways: debits by call answer time (``answer_ms``).

Reservations and releases are credit holds, not money movements: no report
lists them.  Events come from a source (billing/reports/sources.py): the SQL
ledger or its ClickHouse copy, the same numbers either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd
import pyarrow as pa

from billing.ledger.fold import CHARGE_KINDS
from billing.money import MONEY_DECIMALS, ZERO, report_text

from .sources import Progress, Source, load_events, no_progress

__all__ = ["REPORTS", "SCHEMAS", "MONEY", "MINUTES", "Report", "build_report", "rerate_report"]

MONEY = pa.decimal128(18, MONEY_DECIMALS)
MINUTES = pa.decimal128(18, 3)
_MINUTE_QUANTUM = Decimal("0.001")
_SUMMARY = [("currency", pa.string()), ("calls", pa.int64()), ("minutes", MINUTES), ("billed_s", pa.int64()),
            ("cost", MONEY)]
SCHEMAS: dict[str, pa.Schema] = {
    "statement": pa.schema([("seq", pa.int64()), ("time", pa.string()), ("kind", pa.string()),
                            ("description", pa.string()), ("reference", pa.string()), ("currency", pa.string()),
                            ("amount", MONEY), ("balance", MONEY)]),
    "destinations": pa.schema([("prefix", pa.string()), ("rate_name", pa.string()), *_SUMMARY]),
    "gateways": pa.schema([("gateway", pa.string()), *_SUMMARY]),
    "invoice": pa.schema([("section", pa.string()), ("description", pa.string()), ("calls", pa.int64()),
                          ("billed_s", pa.int64()), ("debit", MONEY), ("credit", MONEY), ("balance", MONEY)]),
    # a rerate run's per-account deltas (billing/rerate.py; ``sipledger rerate show RUN --format``)
    "rerate": pa.schema([("account", pa.string()), ("currency", pa.string()), ("calls", pa.int64()),
                         ("changed", pa.int64()), ("unrated", pa.int64()), ("before", MONEY), ("after", MONEY),
                         ("delta", MONEY)]),
}
REPORTS = ("statement", "destinations", "gateways", "invoice")      # of the ledger, by period


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z") if ms else ""


@dataclass
class Report:
    name: str
    frame: pd.DataFrame
    meta: dict[str, str] = field(default_factory=dict)     # account, period, totals (text)

    @property
    def schema(self) -> pa.Schema:
        return SCHEMAS[self.name]

    @property
    def money_columns(self) -> list[str]:
        return [f.name for f in self.schema if f.type == MONEY]


def _report(name: str, rows: list[dict], meta: dict[str, str]) -> Report:
    """A report's frame in its schema's column order; decimal columns hold Decimals (object dtype)."""
    schema = SCHEMAS[name]
    frame = pd.DataFrame(rows, columns=schema.names)
    for f in schema:
        if pa.types.is_decimal(f.type):
            frame[f.name] = pd.Series([v if isinstance(v, Decimal) else Decimal(v) for v in frame[f.name]],
                                      index=frame.index, dtype=object)
    return Report(name, frame, meta)


def _describe(e: dict) -> str:
    kind = e["kind"]
    if kind == "debit":
        rate = e.get("rate_name") or e.get("prefix") or "*"
        return f"call to {e.get('number', '')} ({rate}), {e.get('billed_s', 0)} s billed"
    if kind == "rerate":
        return f"rerate of the call to {e.get('number', '')}" + (f": {e['note']}" if e.get("note") else "")
    if kind == "topup":
        return "top-up" + (f": {e['note']}" if e.get("note") else "")
    return f"{kind}" + (f": {e['note']}" if e.get("note") else "")


def _reference(e: dict) -> str:
    if e["kind"] == "debit":
        return f"{e.get('cdr_id', '')}/{e.get('leg', '')}"
    if e["kind"] == "rerate":
        return f"{e.get('cdr_id', '')}/{e.get('leg', '')} run {e.get('key', '')}"
    return e.get("key", "")


def statement(source: Source, account: str, from_ms: int | None, to_ms: int | None, *,
              progress: Progress = no_progress) -> Report:
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
    return _report("statement", rows, {
        "account": account, "from": _iso(from_ms or 0), "to": _iso(to_ms or 0),
        "opening_balance": report_text(opening), "closing_balance": report_text(balance)})


def _summary(source: Source, account: str | None, from_ms, to_ms, keys: list[str], progress) -> list[dict]:
    debits = load_events(source, account=account, from_ms=from_ms, to_ms=to_ms, time_field="answer_ms",
                         kinds=list(CHARGE_KINDS), progress=progress)
    groups: dict[tuple, dict] = {}
    for e in debits:
        key = tuple(e.get(k, "") or "" for k in keys) + (e["currency"],)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"calls": 0, "duration_ms": 0, "billed_s": 0, "cost": ZERO}
        if e["kind"] == "debit":             # a rerate correction adds to its call's cost, not a call
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
    return rows


def _minutes(ms: int) -> Decimal:
    """Usage in minutes: ms / 60000 to 3 decimals, rounded half up (a display of usage, not money)."""
    return (Decimal(ms) / Decimal(60000)).quantize(_MINUTE_QUANTUM, rounding=ROUND_HALF_UP)


def destinations(source: Source, account: str | None, from_ms, to_ms, *,
                 progress: Progress = no_progress) -> Report:
    rows = _summary(source, account, from_ms, to_ms, ["prefix", "rate_name"], progress)
    total = sum((row["cost"] for row in rows), ZERO)
    return _report("destinations", rows, {
        "account": account or "(all)", "from": _iso(from_ms or 0), "to": _iso(to_ms or 0),
        "total_cost": report_text(total)})


def gateways(source: Source, account: str | None, from_ms, to_ms, *,
             progress: Progress = no_progress) -> Report:
    rows = _summary(source, account, from_ms, to_ms, ["gateway"], progress)
    for row in rows:
        row["gateway"] = row["gateway"] or "(direct)"
    total = sum((row["cost"] for row in rows), ZERO)
    return _report("gateways", rows, {
        "account": account or "(all)", "from": _iso(from_ms or 0), "to": _iso(to_ms or 0),
        "total_cost": report_text(total)})


def invoice(source: Source, account: str, from_ms: int | None, to_ms: int | None, *,
            info: Any = None, progress: Progress = no_progress) -> Report:
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
    meta = {"account": account, "from": _iso(from_ms or 0), "to": _iso(to_ms or 0), "currency": currency,
            "opening_balance": report_text(opening), "charges": report_text(total_debit),
            "credits": report_text(total_credit), "closing_balance": report_text(closing),
            "amount_due": report_text(due)}
    if info is not None:
        meta.update(kind=info.kind, credit_limit=report_text(info.credit_limit))
    return _report("invoice", rows, meta)


def build_report(name: str, source: Source, *, account: str | None, from_ms: int | None,
                 to_ms: int | None, info: Any = None, progress: Progress = no_progress) -> Report:
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


def rerate_report(run: dict) -> Report:
    """A rerate run's record (``RerateRun.to_dict()``) as a report: one row per account."""
    rows = [{k: a[k] for k in SCHEMAS["rerate"].names} for a in run["accounts"]]
    for row in rows:
        for money in ("before", "after", "delta"):
            row[money] = Decimal(row[money])
    meta = {k: str(run[k]) for k in ("id", "who", "created_ms", "from_ms", "to_ms", "account", "plan", "calls",
                                     "changed", "unrated", "total_before", "total_after", "delta")}
    return _report("rerate", rows, meta)
