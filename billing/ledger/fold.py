"""The prepaid/postpaid ledger: immutable money events and their fold.  Pure: no I/O, no clock.

Every change to an account's money is a ``LedgerEvent``; nothing ever
overwrites a balance.  An account's state is the fold of its events:

============ ================== ===========================================
kind         amount             effect
============ ================== ===========================================
topup        > 0                balance += amount
adjustment   != 0 (signed)      balance += amount
refund       > 0                balance += amount (money given back, e.g. a
                                disputed call)
debit        >= 0               balance -= amount (a rated CDR leg)
reservation  >= 0               reserved += amount (credit held by a live call)
release      >= 0               reserved -= amount (a call's hold given back)
============ ================== ===========================================

``available = balance (+ credit_limit for postpaid) - reserved - held`` where
``held`` are credit control's in-memory authorization holds (not events).

Identity.  Every event id is a UUIDv5 of its *cause*, so the same cause can
never be applied twice, whoever retries or replays it:

* debit        (cdr_id, leg)                      -- a CDR leg is charged once
* topup / adjustment / refund   (account, idempotency key)
* reservation  (call_id, step) / release (call_id, step) / final release (call_id)

Money is ``Decimal`` only.  The ledger keeps at most ``MONEY_DECIMALS`` (6)
decimals -- the scale of the ClickHouse copy, Decimal(18,6) -- and refuses
(never rounds) an amount with more; sums are exact.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal, get_args

import msgspec

__all__ = [
    "Kind", "KINDS", "AccountKind", "AccountStatus", "MONEY_DECIMALS", "MAX_AMOUNT", "LedgerError",
    "AccountInfo", "LedgerEvent", "Book", "CallReservation", "Fold", "fold", "balance_delta",
    "reserved_delta", "parse_amount", "check_amount", "money_text", "event_id", "debit_id",
    "money_event_id", "reservation_id", "release_id", "final_release_id", "money_event",
    "check_account_id", "ZERO",
]

Kind = Literal["topup", "adjustment", "refund", "debit", "reservation", "release"]
KINDS: tuple[str, ...] = get_args(Kind)
MONEY_KINDS = ("topup", "adjustment", "refund")
AccountKind = Literal["prepaid", "postpaid"]
AccountStatus = Literal["active", "blocked"]
MONEY_DECIMALS = 6
MAX_AMOUNT = Decimal(10) ** 12          # Decimal(18,6) holds |x| < 10^12
ZERO = Decimal(0)
EVENT_SCHEMA_VERSION = 1
_NAMESPACE = uuid.UUID("3c0f8e52-8d4e-4a8f-b1d3-6a3f0c9e2b71")


class LedgerError(ValueError):
    """A money operation that cannot be done, worded as one line.  ``status`` is
    the HTTP status an API answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# -- money -------------------------------------------------------------------------------

def check_amount(value: Decimal, what: str = "amount") -> Decimal:
    """``value`` if the ledger can hold it exactly (finite, at most 6 decimals, |x| < 10^12)."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise LedgerError(f"{what} must be a finite decimal, not {value!r}")
    if abs(value) >= MAX_AMOUNT:
        raise LedgerError(f"{what} {value} is too large (limit {MAX_AMOUNT})")
    if value.as_tuple().exponent < -MONEY_DECIMALS and value != value.quantize(Decimal(1).scaleb(-MONEY_DECIMALS)):
        raise LedgerError(f"{what} {money_text(value)} has more than {MONEY_DECIMALS} decimals; "
                          "the ledger never rounds money")
    return value


def parse_amount(text: object, what: str = "amount") -> Decimal:
    """A plain decimal text (``"10"``, ``"-2.5"``, ``"0.000001"``) as an exact Decimal.
    Exponents, floats, NaN and more than 6 decimals are refused."""
    if isinstance(text, Decimal):
        return check_amount(text, what)
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise LedgerError(f"{what} must be a decimal string like \"10.50\", not {type(text).__name__}")
    raw = str(text).strip()
    body = raw[1:] if raw[:1] in "+-" else raw
    if not body or not all(c.isdigit() or c == "." for c in body) or body.count(".") > 1 \
            or body.startswith(".") or body.endswith("."):
        raise LedgerError(f"{what} {raw!r} is not a plain decimal number like 10.50")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise LedgerError(f"{what} {raw!r} is not a decimal number") from None
    return check_amount(value, what)


def money_text(value: Decimal) -> str:
    """Plain text of an amount (no exponent): 1E+1 -> "10", 0.30000 -> "0.30000"."""
    return format(value, "f")


# -- ids -----------------------------------------------------------------------------------

def event_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\x00".join(str(p) for p in parts)))


def debit_id(cdr_id: str, leg: int) -> str:
    return event_id("debit", cdr_id, leg)


def money_event_id(kind: str, account: str, key: str) -> str:
    return event_id(kind, account, key)


def reservation_id(call_id: str, step: int) -> str:
    return event_id("reservation", call_id, step)


def release_id(call_id: str, step: int) -> str:
    return event_id("release", call_id, step)


def final_release_id(call_id: str) -> str:
    return event_id("release-final", call_id)


def check_account_id(account: object) -> str:
    text = account.strip() if isinstance(account, str) else ""
    if not text or len(text) > 255 or any(c.isspace() for c in text) or not text.isprintable():
        raise LedgerError(f"account {account!r} must be a non-empty user@domain without spaces")
    return text


# -- records -------------------------------------------------------------------------------

class AccountInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A billing account (user@domain, as the proxy authenticates it)."""
    id: str
    kind: AccountKind = "prepaid"
    currency: str = "EUR"
    status: AccountStatus = "active"
    credit_limit: Decimal = ZERO     # postpaid: how far below zero the balance may go
    name: str = ""
    created_ms: int = 0
    updated_ms: int = 0

    @property
    def floor(self) -> Decimal:
        """The lowest balance calls may spend down to."""
        return -self.credit_limit if self.kind == "postpaid" else ZERO


class LedgerEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One immutable money event.  Flat on purpose: the same columns in SQLite,
    on Kafka (JSON, key = account) and in ClickHouse."""
    id: str
    account: str
    kind: Kind
    amount: Decimal
    currency: str
    ts_ms: int
    seq: int = 0                    # position in the durable ledger (0 until stored)
    v: int = EVENT_SCHEMA_VERSION
    call_id: str = ""
    cdr_id: str = ""
    leg: int = -1
    key: str = ""                   # idempotency key (topup / adjustment / refund)
    step: int = 0                   # reservation / release: the call's step number
    final: bool = False             # release: the call's last one (its CDR was debited)
    paid_ms: int = 0                # reservation / release: call time paid for after this event (from answer)
    answer_ms: int = 0              # reservation / debit: the call's answer (epoch ms)
    number: str = ""                # reservation / debit: the rated number
    plan: str = ""
    prefix: str = ""                # debit: the opening rate's prefix ...
    rate_name: str = ""             # ... and name
    gateway: str = ""               # debit: the leg's gateway
    duration_ms: int = 0            # debit: the leg's usage
    billed_s: int = 0               # debit: seconds billed (increments)
    note: str = ""


def balance_delta(event: LedgerEvent) -> Decimal:
    kind = event.kind
    if kind in MONEY_KINDS:
        return event.amount
    if kind == "debit":
        return -event.amount
    return ZERO


def reserved_delta(event: LedgerEvent) -> Decimal:
    if event.kind == "reservation":
        return event.amount
    if event.kind == "release":
        return -event.amount
    return ZERO


def money_event(account: AccountInfo, kind: str, amount: Decimal, key: str, *, ts_ms: int,
                note: str = "", balance: Decimal | None = None, cdr_id: str = "", leg: int = -1
                ) -> LedgerEvent:
    """A validated top-up / adjustment / refund.  With ``balance`` (the account's
    current balance) a prepaid balance may not be taken below zero (postpaid:
    below -credit_limit)."""
    if kind not in MONEY_KINDS:
        raise LedgerError(f"kind must be one of {', '.join(MONEY_KINDS)}, not {kind!r}")
    check_amount(amount)
    key = key.strip() if isinstance(key, str) else ""
    if not key or len(key) > 255 or not key.isprintable():
        raise LedgerError("an idempotency key (1-255 printable characters) is required")
    if kind in ("topup", "refund") and amount <= 0:
        raise LedgerError(f"a {kind} amount must be > 0, not {money_text(amount)}")
    if kind == "adjustment" and amount == 0:
        raise LedgerError("an adjustment amount must not be 0")
    if len(note) > 500:
        raise LedgerError("note is longer than 500 characters")
    if balance is not None and amount < 0 and balance + amount < account.floor:
        raise LedgerError(
            f"adjustment {money_text(amount)} would take {account.id}'s balance {money_text(balance)} "
            f"below {money_text(account.floor)}", status=409)
    return LedgerEvent(id=money_event_id(kind, account.id, key), account=account.id, kind=kind,
                       amount=amount, currency=account.currency, ts_ms=ts_ms, key=key, note=note,
                       cdr_id=cdr_id, leg=leg)


def same_request(a: LedgerEvent, b: LedgerEvent) -> bool:
    """Two money events made from one idempotency key describe the same request."""
    return (a.kind, a.account, a.amount, a.key) == (b.kind, b.account, b.amount, b.key)


# -- the fold ------------------------------------------------------------------------------

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
        elif event.kind == "debit":
            self.debits += event.amount


@dataclass
class CallReservation:
    """What the ledger knows about one call's reservation."""
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
                call = self.calls[event.call_id] = CallReservation(account=event.account)
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


def fold(events: Iterable[LedgerEvent]) -> Fold:
    """The state a sequence of events folds to; duplicates (same id) count once."""
    state = Fold()
    for event in events:
        state.apply(event)
    return state


def build_account(account: str, fields: dict, *, existing: AccountInfo | None, now_ms: int,
                  default_currency: str = "EUR") -> AccountInfo:
    """An account from user-supplied fields (create: ``existing`` None; update:
    the fields given replace those of ``existing``).  Raises LedgerError."""
    from billing.rating.model import RatingError, check_currency

    allowed = {"kind", "currency", "status", "credit_limit", "name"}
    unknown = set(fields) - allowed
    if unknown:
        raise LedgerError(f"unknown account field(s): {', '.join(sorted(unknown))}")
    base = existing or AccountInfo(id=check_account_id(account), currency=default_currency,
                                   created_ms=now_ms)
    values = {f: getattr(base, f) for f in AccountInfo.__struct_fields__}
    for name, value in fields.items():
        if value is None:
            continue
        if name == "credit_limit":
            value = parse_amount(value, "credit_limit")
            if value < 0:
                raise LedgerError("credit_limit must be >= 0")
        elif name == "kind" and value not in ("prepaid", "postpaid"):
            raise LedgerError(f"kind must be prepaid or postpaid, not {value!r}")
        elif name == "status" and value not in ("active", "blocked"):
            raise LedgerError(f"status must be active or blocked, not {value!r}")
        elif name == "currency":
            try:
                check_currency(value)
            except RatingError as exc:
                raise LedgerError(str(exc)) from None
        elif name == "name" and (not isinstance(value, str) or len(value) > 255):
            raise LedgerError("name must be text of at most 255 characters")
        values[name] = value
    if values["kind"] == "prepaid" and values["credit_limit"] != 0:
        raise LedgerError("a prepaid account has no credit limit (use kind postpaid)")
    values["updated_ms"] = now_ms
    return AccountInfo(**values)


def account_dict(info: AccountInfo) -> dict:
    return {"id": info.id, "kind": info.kind, "currency": info.currency, "status": info.status,
            "credit_limit": money_text(info.credit_limit), "name": info.name,
            "created_ms": info.created_ms, "updated_ms": info.updated_ms}


def event_dict(ev: LedgerEvent) -> dict:
    """An event as JSON-ready data (amount as exact text)."""
    data = msgspec.to_builtins(ev, builtin_types=(Decimal,))
    data["amount"] = money_text(ev.amount)
    data["balance_delta"] = money_text(balance_delta(ev))
    return data
