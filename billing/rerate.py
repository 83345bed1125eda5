"""Rerating: price debited calls again and book the differences as corrections.  Pure: no I/O, no clock.

A rerate run takes the debited CDR legs of a period (by answer time), prices
each again (``rating.rate_call``) with the rates valid at the call's time --
the account's plan, or one plan given for the run -- and, for every leg whose
cost changed, makes **one** ``rerate`` ledger event (proxy/contract/ledger.py)::

    amount = new cost - cost so far        (signed; balance -= amount)

where *cost so far* is the leg's debit plus every earlier correction of it.
Nothing is edited or deleted: the debit stays the one record of the call,
corrections follow it (docs/rerating.md says why one correction and not a
refund + a second debit).

Identity.  A correction's id is a UUIDv5 of (cdr_id, leg, how many
corrections the leg had before, the resulting cost).  So the same rerate run
twice -- or a retry after a timeout -- finds every leg at its new cost and
makes nothing, and two runs racing to the same result make one event; while
A -> B -> A -> B (rates changed back and forth) makes three distinct
corrections, because each follows a different number of earlier ones.

The debit carries every input rating needs (number, answer instant, usage),
so a rerate reads only the ledger: no CDR store, no ClickHouse.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from billing.errors import LedgerError
from billing.ledger.accounts import AccountInfo
from billing.ledger.events import event_id
from billing.money import ZERO, check_amount, money_text
from billing.rating.model import Charge, RatePlan, RatesSnapshot, RatingError, rate_call
from proxy.contract.ledger import LedgerEvent

__all__ = ["MAX_LEGS", "MAX_CHANGES_SHOWN", "Leg", "Change", "AccountDelta", "RerateRun", "Pricer",
           "legs_of", "rerate_id", "pricer", "plan_rerate"]

MAX_LEGS = 2_000_000            # one run holds its legs in memory: split a longer period
MAX_CHANGES_SHOWN = 200         # changes listed in a run's answer (all are in the ledger)
_QUANTUM = Decimal("0.000001")  # the ledger's scale: 0.15 and 0.1500 are one cost

Pricer = Callable[[LedgerEvent], Charge]


@dataclass
class Leg:
    """A debited CDR leg and what it has cost so far."""
    debit: LedgerEvent
    corrections: list[LedgerEvent] = field(default_factory=list)

    @property
    def cost(self) -> Decimal:
        total = self.debit.amount
        for c in self.corrections:
            total += c.amount
        return total


@dataclass
class Change:
    account: str
    cdr_id: str
    leg: int
    call_id: str
    number: str
    answer_ms: int
    duration_ms: int
    before: str
    after: str
    event_id: str


@dataclass
class AccountDelta:
    account: str
    currency: str
    calls: int = 0
    changed: int = 0
    unrated: int = 0
    before: Decimal = ZERO
    after: Decimal = ZERO

    @property
    def delta(self) -> Decimal:
        return self.after - self.before


@dataclass
class RerateRun:
    """One rerate run: what it looked at and what it changed (a ``rerate_run`` row)."""
    id: str
    who: str
    created_ms: int
    from_ms: int
    to_ms: int
    account: str = ""               # the run's filter ("" = every account)
    plan: str = ""                  # the plan it priced with ("" = each account's own)
    dry_run: bool = False
    calls: int = 0
    changed: int = 0
    unrated: int = 0
    total_before: Decimal = ZERO
    total_after: Decimal = ZERO
    accounts: dict[str, AccountDelta] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "who": self.who, "created_ms": self.created_ms, "from_ms": self.from_ms,
                "to_ms": self.to_ms, "account": self.account, "plan": self.plan, "dry_run": self.dry_run,
                "calls": self.calls, "changed": self.changed, "unrated": self.unrated,
                "total_before": money_text(self.total_before), "total_after": money_text(self.total_after),
                "delta": money_text(self.total_after - self.total_before),
                "accounts": [_delta_dict(d) for _, d in sorted(self.accounts.items())]}

    def accounts_json(self) -> str:
        return json.dumps([_delta_dict(d) for _, d in sorted(self.accounts.items())])

    @staticmethod
    def accounts_from_json(text: str) -> dict[str, AccountDelta]:
        out = {}
        for d in json.loads(text or "[]"):
            out[d["account"]] = AccountDelta(d["account"], d["currency"], d["calls"], d["changed"],
                                             d.get("unrated", 0), Decimal(d["before"]), Decimal(d["after"]))
        return out


def _delta_dict(d: AccountDelta) -> dict:
    data = asdict(d)
    data.update(before=money_text(d.before), after=money_text(d.after), delta=money_text(d.delta))
    return data


def legs_of(debits: Iterable[LedgerEvent], corrections: Iterable[LedgerEvent]) -> list[Leg]:
    """The debits with their corrections (in ledger order), in debit order."""
    legs = {(d.cdr_id, d.leg): Leg(d) for d in debits}
    for c in sorted(corrections, key=lambda e: e.seq):
        leg = legs.get((c.cdr_id, c.leg))
        if leg is not None:
            leg.corrections.append(c)
    return list(legs.values())


def rerate_id(cdr_id: str, leg: int, earlier: int, cost: Decimal) -> str:
    """A correction's id: the leg, how many corrections came before, the cost it results in."""
    return event_id("rerate", cdr_id, leg, earlier, money_text(cost.quantize(_QUANTUM)))


def pricer(rates: RatesSnapshot, accounts: Mapping[str, AccountInfo], *, default_plan: str = "",
           plan: RatePlan | None = None) -> Pricer:
    """Prices a debited leg as credit control does (billing/credit/control.py ``plan_cdr``):
    the account's plan (``plan`` when given), its currency, the number, answer and usage."""
    def price(debit: LedgerEvent) -> Charge:
        info = accounts.get(debit.account)
        use = plan or rates.plan_for(debit.account, default_plan)
        if use is None:
            raise RatingError("no rate plan")
        currency = info.currency if info is not None else debit.currency
        if use.currency is not None and use.currency != currency:
            raise RatingError(f"rate plan in {use.currency}, account in {currency}")
        return rate_call(use, debit.number, debit.answer_ms, debit.duration_ms)
    return price


def plan_rerate(run: RerateRun, legs: Iterable[Leg], price: Pricer) -> tuple[list[LedgerEvent], list[Change]]:
    """Price every leg again; fills ``run``'s counts and totals and returns the
    corrections to append (and the changes they make).  A leg that cannot be
    priced now keeps its cost (counted as ``unrated``)."""
    events: list[LedgerEvent] = []
    changes: list[Change] = []
    for leg in legs:
        debit = leg.debit
        delta = run.accounts.get(debit.account)
        if delta is None:
            delta = run.accounts[debit.account] = AccountDelta(debit.account, debit.currency)
        before = leg.cost
        run.calls += 1
        delta.calls += 1
        try:
            charge = price(debit)
            after = check_amount(charge.total, "the call's new cost")
        except (RatingError, LedgerError):
            run.unrated += 1
            delta.unrated += 1
            after = before
        delta.before += before
        delta.after += after
        run.total_before += before
        run.total_after += after
        if after == before:
            continue
        correction = LedgerEvent(
            id=rerate_id(debit.cdr_id, debit.leg, len(leg.corrections), after), account=debit.account,
            kind="rerate", amount=after - before, currency=debit.currency, ts_ms=run.created_ms,
            call_id=debit.call_id, cdr_id=debit.cdr_id, leg=debit.leg, key=run.id,
            answer_ms=debit.answer_ms, number=debit.number, plan=charge.plan,
            prefix=debit.prefix, rate_name=debit.rate_name, gateway=debit.gateway,
            duration_ms=debit.duration_ms,
            note=f"{money_text(before)} -> {money_text(after)}: plan {charge.plan}, rate "
                 f"{charge.prefix or '*'}{f' {charge.name}' if charge.name else ''}, "
                 f"{charge.billed_seconds} s billed")
        events.append(correction)
        run.changed += 1
        delta.changed += 1
        changes.append(Change(debit.account, debit.cdr_id, debit.leg, debit.call_id, debit.number,
                              debit.answer_ms, debit.duration_ms, money_text(before), money_text(after),
                              correction.id))
    return events, changes
