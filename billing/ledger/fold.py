"""The ledger's fold: an account's money is the sum of its events.  Pure: no I/O, no clock.

Every change to an account's money is a ``LedgerEvent``
(proxy/contract/ledger.py, where each kind's effect is tabled); nothing ever
overwrites a balance.  An account's state is the fold of its events:
``balance`` (top-ups, adjustments, refunds minus debits) and ``reserved``
(what live calls hold).  Credit control (billing/credit/control.py) keeps
the same two numbers live and adds ``held`` (authorizations not answered yet,
not events), so

    available = balance (+ credit_limit for postpaid) - reserved - held

An event is applied once per id (ids are the causes', billing/ledger/events.py):
folding a ledger with duplicates gives the same state.  Sums are exact
Decimals (billing/money.py).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from billing.money import ZERO
from proxy.contract.ledger import LedgerEvent

__all__ = ["MONEY_KINDS", "CHARGE_KINDS", "balance_delta", "reserved_delta", "Book", "CallReservation", "Fold", "fold"]

MONEY_KINDS = ("topup", "adjustment", "refund")       # booked by an operator; the rest by calls
# what a call costs: its debit, then each rerun's signed correction (billing/rerate.py)
CHARGE_KINDS = ("debit", "rerate")


def balance_delta(event: LedgerEvent) -> Decimal:
    kind = event.kind
    if kind in MONEY_KINDS:
        return event.amount
    if kind in CHARGE_KINDS:
        return -event.amount
    return ZERO


def reserved_delta(event: LedgerEvent) -> Decimal:
    if event.kind == "reservation":
        return event.amount
    if event.kind == "release":
        return -event.amount
    return ZERO


@dataclass
class Book:
    """One account's money as the fold of its events."""
    balance: Decimal = ZERO
    reserved: Decimal = ZERO
    events: int = 0
    last_seq: int = 0
    topups: Decimal = ZERO
    debits: Decimal = ZERO

    def apply(self, event: LedgerEvent) -> None:
        self.balance += balance_delta(event)
        self.reserved += reserved_delta(event)
        self.events += 1
        self.last_seq = max(self.last_seq, event.seq)
        if event.kind == "topup":
            self.topups += event.amount
        elif event.kind in CHARGE_KINDS:
            self.debits += event.amount


@dataclass
class CallReservation:
    """What the ledger knows about one call's reservation."""
    call_id: str
    account: str
    reserved: Decimal = ZERO
    steps: int = 0                  # reservation + release events seen
    paid_ms: int = 0
    answer_ms: int = 0
    number: str = ""
    plan: str = ""
    final: bool = False
    last_ms: int = 0


@dataclass
class Fold:
    books: dict[str, Book] = field(default_factory=dict)
    calls: dict[str, CallReservation] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0

    def apply(self, event: LedgerEvent) -> bool:
        """Apply one event; False (and nothing changes) when its id was applied already."""
        if event.id in self.ids:
            self.duplicates += 1
            return False
        self.ids.add(event.id)
        self.books.setdefault(event.account, Book()).apply(event)
        if event.kind in ("reservation", "release") and event.call_id:
            call = self.calls.get(event.call_id)
            if call is None:
                call = self.calls[event.call_id] = CallReservation(event.call_id, event.account)
            call.reserved += reserved_delta(event)
            call.steps = max(call.steps, event.step + 1)
            call.paid_ms = event.paid_ms
            call.last_ms = max(call.last_ms, event.ts_ms)
            if event.kind == "reservation":
                call.answer_ms = event.answer_ms or call.answer_ms
                call.number = event.number or call.number
                call.plan = event.plan or call.plan
            if event.final:
                call.final = True
        return True

    def open_calls(self) -> dict[str, CallReservation]:
        """Calls holding a reservation that no final release has closed."""
        return {cid: c for cid, c in self.calls.items() if not c.final}

    def book(self, account: str) -> Book:
        """The account's book (an empty one if it has no events)."""
        return self.books.get(account) or Book()


def fold(events: Iterable[LedgerEvent]) -> Fold:
    """The state a sequence of events folds to; duplicates (same id) count once."""
    state = Fold()
    for event in events:
        state.apply(event)
    return state
