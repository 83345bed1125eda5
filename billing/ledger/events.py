"""Making ledger events: their ids, validated money events, problems.  Pure: no I/O, no clock.

The wire form of an event is ``proxy.contract.ledger.LedgerEvent``; this
module decides *which* events exist.

Identity.  Every event id is a UUIDv5 of its *cause*, so the same cause can
never be applied twice, whoever retries or replays it:

* debit        (cdr_id, leg)                      -- a CDR leg is charged once
* topup / adjustment / refund   (account, idempotency key)
* reservation  (call_id, step) / release (call_id, step) / final release (call_id)

A ``Problem`` is not an event: it records something that could not be billed
as it should (a CDR without a usable rate, a call released without a CDR), for
``ledger check``.
"""
from __future__ import annotations

import uuid
from decimal import Decimal
from typing import cast

import msgspec

from billing.errors import LedgerError
from billing.money import check_amount, money_text
from proxy.contract.ledger import Kind, LedgerEvent

from .accounts import AccountInfo
from .fold import MONEY_KINDS, balance_delta

__all__ = ["Problem", "event_id", "debit_id", "money_event_id", "reservation_id", "release_id",
           "final_release_id", "money_event", "check_floor", "same_request", "event_dict"]

_NAMESPACE = uuid.UUID("3c0f8e52-8d4e-4a8f-b1d3-6a3f0c9e2b71")


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """Something that could not be billed as it should: kept for ``ledger check``."""
    id: str
    ts_ms: int
    account: str
    reason: str
    call_id: str = ""
    cdr_id: str = ""
    leg: int = -1


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


# -- money an operator books ------------------------------------------------------------------

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
    event = LedgerEvent(id=money_event_id(kind, account.id, key), account=account.id,
                        kind=cast(Kind, kind),          # one of MONEY_KINDS: checked above
                        amount=amount, currency=account.currency, ts_ms=ts_ms, key=key, note=note,
                        cdr_id=cdr_id, leg=leg)
    if balance is not None:
        check_floor(account, event, balance)
    return event


def check_floor(account: AccountInfo, event: LedgerEvent, balance: Decimal) -> None:
    """Refuse (409) an event that would take ``balance`` below the account's floor
    (prepaid: 0, postpaid: -credit_limit).  Credits always pass."""
    delta = balance_delta(event)
    if delta < 0 and balance + delta < account.floor:
        raise LedgerError(
            f"{event.kind} {money_text(event.amount)} would take {account.id}'s balance {money_text(balance)} "
            f"below {money_text(account.floor)}", status=409)


def same_request(a: LedgerEvent, b: LedgerEvent) -> bool:
    """Two money events made from one idempotency key describe the same request."""
    return (a.kind, a.account, a.amount, a.key) == (b.kind, b.account, b.amount, b.key)


def event_dict(ev: LedgerEvent) -> dict:
    """An event as JSON-ready data (amount as exact text)."""
    data = msgspec.to_builtins(ev, builtin_types=(Decimal,))
    data["amount"] = money_text(ev.amount)
    data["balance_delta"] = money_text(balance_delta(ev))
    return data
