"""``sipledger ledger check``: prove that Σ debits = Σ rated CDR costs, per account and month.

Two independent sides:

* the CDRs, as the CDR pipeline stored them in ClickHouse (``cdr`` table, one
  row per leg, deduplicated), of billing accounts, answered with usage, in
  ``[from, to)`` by answer time -- each re-rated now with ``rating.rate_call``
  and the account's current plan;
* the debits of the durable ledger (SQLite), by the same answer time.

They are matched by (cdr_id, leg).  Differences are listed: a CDR without a
debit (``missing_debit``), a debit without a CDR (``debit_without_cdr``), a
debit of another amount (``amount_mismatch`` -- e.g. rates edited since), a
CDR that cannot be rated (``unrated``), and the billing service's own problem
records (``problem``).  A debit is unique per (cdr_id, leg) by construction;
``duplicate_debit`` would show a broken ledger.

After a rerate (billing/rerate.py) a leg's cost is its debit plus its
``rerate`` corrections: that sum is what is compared with the rated cost.

The ledger's ClickHouse copy (``ledger_events``, billing/ledger/clickhouse.py)
is checked too: folding the copied events must give every account the
balance and reservations the SQL ledger folds to, up to the last ``seq`` the
copy holds (so a copy that lags is not a mismatch; a hole in it is).  A
mismatch is one ``archive_balance`` difference per account.

A call answered *before its account existed* was nobody's to pay: credit
control bills only accounts it knows when the CDR comes.  Such a leg without
a debit is not a missing debit; it is listed apart (``skipped``, kind
``before_account``), counted in no period and does not fail the check.  (If
its CDR came after the account was created, it was debited, and is checked
like any other.)
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from msgspec.structs import replace

from billing.money import ZERO, money_text
from billing.rating.model import RatesSnapshot, RatingError, number_from_uri, rate_call
from proxy.contract.ledger import LedgerEvent

from .accounts import AccountInfo
from .clickhouse import LedgerQueries
from .fold import CHARGE_KINDS, Fold

_EVENT_FIELDS = set(LedgerEvent.__struct_fields__)

__all__ = ["Difference", "AccountPeriod", "CheckResult", "reconcile", "cdr_legs", "run_check",
           "archive_differences"]


@dataclass
class Difference:
    kind: str
    account: str
    cdr_id: str = ""
    leg: int = -1
    period: str = ""
    rated: str = ""
    debited: str = ""
    detail: str = ""


@dataclass
class AccountPeriod:
    account: str
    period: str                      # YYYY-MM (UTC, answer time)
    currency: str
    cdr_legs: int = 0
    rated: Decimal = ZERO
    debits: int = 0
    debited: Decimal = ZERO

    @property
    def difference(self) -> Decimal:
        return self.debited - self.rated


@dataclass
class CheckResult:
    from_ms: int | None
    to_ms: int | None
    periods: list[AccountPeriod] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    skipped: list[Difference] = field(default_factory=list)        # not billable: not an error

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict:
        return {
            "from_ms": self.from_ms, "to_ms": self.to_ms, "ok": self.ok,
            "periods": [{"account": p.account, "period": p.period, "currency": p.currency,
                         "cdr_legs": p.cdr_legs, "rated": money_text(p.rated), "debits": p.debits,
                         "debited": money_text(p.debited), "difference": money_text(p.difference)}
                        for p in self.periods],
            "differences": [asdict(d) for d in self.differences],
            "skipped": [asdict(d) for d in self.skipped],
        }


def _period(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m")


def reconcile(legs: Iterable[dict], debits: Iterable[LedgerEvent], accounts: dict[str, AccountInfo],
              rates: RatesSnapshot, *, default_plan: str = "", problems: Iterable = (),
              from_ms: int | None = None, to_ms: int | None = None) -> CheckResult:
    result = CheckResult(from_ms, to_ms)
    periods: dict[tuple[str, str], AccountPeriod] = {}

    def bucket(account: str, ms: int) -> AccountPeriod:
        key = (account, _period(ms))
        if key not in periods:
            info = accounts.get(account)
            periods[key] = AccountPeriod(account, key[1], info.currency if info else "")
        return periods[key]

    debited: dict[tuple[str, int], LedgerEvent] = {}
    corrections: list[LedgerEvent] = []
    for debit in debits:
        if debit.kind == "rerate":
            corrections.append(debit)
            continue
        key = (debit.cdr_id, debit.leg)
        b = bucket(debit.account, debit.answer_ms)
        b.debits += 1
        b.debited += debit.amount
        if key in debited:
            result.differences.append(Difference("duplicate_debit", debit.account, key[0], key[1], b.period,
                                                 debited=money_text(debit.amount)))
        else:
            debited[key] = debit
    for c in corrections:                    # a rerate's correction: part of its leg's cost
        booked = debited.get((c.cdr_id, c.leg))
        if booked is not None:
            debited[(c.cdr_id, c.leg)] = replace(booked, amount=booked.amount + c.amount)
            bucket(c.account, booked.answer_ms).debited += c.amount
    rated: set[tuple[str, int]] = set()
    for leg in legs:
        info = accounts.get(leg["account"])
        if info is None:
            continue
        key, answer_ms = (leg["cdr_id"], int(leg["leg"])), int(leg["answer_ms"])
        booked = debited.get(key)
        if booked is None and answer_ms < info.created_ms:
            result.skipped.append(Difference(
                "before_account", info.id, key[0], key[1], _period(answer_ms),
                detail="answered before the account was created: not billable"))
            continue
        rated.add(key)
        b = bucket(info.id, answer_ms)
        b.cdr_legs += 1
        try:
            plan = rates.plan_for(info.id, default_plan)
            if plan is None:
                raise RatingError("no rate plan")
            cost = rate_call(plan, number_from_uri(leg["dialled"]), answer_ms, int(leg["duration_ms"])).total
        except RatingError as exc:
            result.differences.append(Difference("unrated", info.id, key[0], key[1], b.period,
                                                 detail=str(exc)[:200]))
            continue
        b.rated += cost
        if booked is None:
            result.differences.append(Difference(
                "missing_debit", info.id, key[0], key[1], b.period, rated=money_text(cost),
                detail="answered CDR leg with no debit"))
        elif cost != booked.amount:
            result.differences.append(Difference(
                "amount_mismatch", booked.account, key[0], key[1], b.period, rated=money_text(cost),
                debited=money_text(booked.amount), detail="rates changed since the debit?"))
    for key, debit in debited.items():
        if key not in rated:
            result.differences.append(Difference(
                "debit_without_cdr", debit.account, key[0], key[1], _period(debit.answer_ms),
                debited=money_text(debit.amount), detail="no such CDR leg in the CDR store (yet?)"))
    for p in problems:
        result.differences.append(Difference("problem", p.account, p.cdr_id, p.leg,
                                             _period(p.ts_ms), detail=p.reason))
    result.periods = sorted(periods.values(), key=lambda p: (p.account, p.period))
    order = lambda d: (d.account, d.period, d.kind, d.cdr_id, d.leg)
    result.differences.sort(key=order)
    result.skipped.sort(key=order)
    return result


def cdr_legs(backend, *, from_ms: int | None, to_ms: int | None, accounts: list[str]) -> list[dict]:
    """Answered CDR legs with usage of those accounts, deduplicated (newest copy)."""
    if not accounts:
        return []
    where = ["duration_ms > 0", "answer_ms > 0", "account IN {accounts}"]
    params: dict = {"accounts": accounts}
    if from_ms is not None:
        where.append("answer_ms >= {from_ms}")
        params["from_ms"] = from_ms
    if to_ms is not None:
        where.append("answer_ms < {to_ms}")
        params["to_ms"] = to_ms
    return backend.query_dicts(
        "SELECT cdr_id, leg, account, dialled, answer_ms, duration_ms, call_id FROM cdr "
        f"WHERE {' AND '.join(where)} ORDER BY cdr_id, leg, version DESC LIMIT 1 BY cdr_id, leg", params)


def run_check(backend, store, rates_store, *, from_ms: int | None, to_ms: int | None,
              account: str | None = None, default_plan: str = "") -> CheckResult:
    """The check with both sides read: CDRs from ``backend`` (ClickHouse), the
    ledger and accounts from ``store`` (SQLite), plans from ``rates_store``."""
    accounts = {a.id: a for a in store.list_accounts() if account is None or a.id == account}
    legs = cdr_legs(backend, from_ms=from_ms, to_ms=to_ms, accounts=sorted(accounts))
    debits = [e for e in store.events(kinds=CHARGE_KINDS, from_ms=from_ms, to_ms=to_ms, time_field="answer_ms",
                                      account=account) if e.account in accounts]
    problems = store.problems(account=account, from_ms=from_ms, to_ms=to_ms)
    result = reconcile(legs, debits, accounts, rates_store.snapshot(), default_plan=default_plan,
                       problems=problems, from_ms=from_ms, to_ms=to_ms)
    result.differences += archive_differences(LedgerQueries(backend), store, account=account)
    return result


def _copied(rows: list[dict]) -> list[LedgerEvent]:
    return [LedgerEvent(**{k: v for k, v in row.items() if k in _EVENT_FIELDS}) for row in rows]


def archive_differences(queries: "LedgerQueries", store, *, account: str | None = None,
                        chunk: int = 20_000) -> list[Difference]:
    """Fold the ClickHouse copy and the SQL ledger up to the copy's last ``seq``;
    one ``archive_balance`` difference per account whose balance or reservations differ."""
    high = queries.max_seq()
    if high <= 0:
        return []
    copy, ledger = Fold(), Fold()
    after = 0
    while True:
        rows = queries.events(account=account, after_seq=after, limit=chunk)
        for event in _copied(rows):
            copy.apply(event)
        if len(rows) < chunk:
            break
        after = int(rows[-1]["seq"])
    after = 0
    while after < high:
        page = store.events(account=account, after_seq=after, limit=chunk)
        for event in page:
            if event.seq <= high:
                ledger.apply(event)
        if len(page) < chunk:
            break
        after = page[-1].seq
    out = []
    for name in sorted(set(copy.books) | set(ledger.books)):
        a, b = ledger.book(name), copy.book(name)
        if (a.balance, a.reserved) != (b.balance, b.reserved):
            out.append(Difference(
                "archive_balance", name, rated=money_text(a.balance), debited=money_text(b.balance),
                detail=f"up to seq {high}: the ledger folds to balance {money_text(a.balance)} reserved "
                       f"{money_text(a.reserved)}, its ClickHouse copy to balance {money_text(b.balance)} "
                       f"reserved {money_text(b.reserved)} ({a.events} vs {b.events} events)"))
    return out
