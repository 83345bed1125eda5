"""Billing accounts: who pays, in which currency, down to which floor.  Pure: no I/O, no clock.

An account is ``user@domain`` as the proxy authenticates it.  Prepaid accounts
spend down to 0; postpaid ones down to ``-credit_limit`` (and get a monthly
invoice).  Accounts are not event-sourced: they are rows (billing/ledger/store.py)
whose changes bump a change log the billing service polls.  ``build_account``
is the one validation of user-supplied fields (CLI, REST, admin RPC).
"""
from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

import msgspec

from billing.errors import LedgerError
from billing.money import ZERO, money_text, parse_amount
from billing.rating.model import RatingError, check_currency

__all__ = ["AccountKind", "AccountStatus", "AccountInfo", "check_account_id", "build_account", "account_dict",
           "balance_view"]

AccountKind = Literal["prepaid", "postpaid"]
AccountStatus = Literal["active", "blocked"]
FIELDS = ("kind", "currency", "status", "credit_limit", "name")       # what a user may set


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


def check_account_id(account: object) -> str:
    text = account.strip() if isinstance(account, str) else ""
    if not text or len(text) > 255 or any(c.isspace() for c in text) or not text.isprintable():
        raise LedgerError(f"account {account!r} must be a non-empty user@domain without spaces")
    return text


def build_account(account: str, fields: dict, *, existing: AccountInfo | None, now_ms: int,
                  default_currency: str = "EUR") -> AccountInfo:
    """An account from user-supplied fields (create: ``existing`` None; update:
    the fields given replace those of ``existing``).  Raises LedgerError."""
    unknown = set(fields) - set(FIELDS)
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
    """An account as JSON-ready data (credit limit as exact text)."""
    return {"id": info.id, "kind": info.kind, "currency": info.currency, "status": info.status,
            "credit_limit": money_text(info.credit_limit), "name": info.name,
            "created_ms": info.created_ms, "updated_ms": info.updated_ms}


def balance_view(info: AccountInfo, *, balance: Decimal, reserved: Decimal, held: Decimal = ZERO,
                 calls: Iterable = (), live: bool) -> dict:
    """An account's money as the API and the CLI show it, amounts as exact text:
    the live one (credit control's memory, with holds) or the one folded from
    the ledger (no service running).  ``calls``: the open calls (``call_id``,
    ``answer_ms``, ``paid_ms``, ``reserved``, ``number``, and ``exhausted`` if known)."""
    return {
        "account": info.id, "currency": info.currency, "kind": info.kind, "status": info.status,
        "credit_limit": money_text(info.credit_limit), "balance": money_text(balance),
        "reserved": money_text(reserved), "held": money_text(held),
        "available": money_text(balance - info.floor - reserved - held),
        "active_calls": [{"call_id": c.call_id, "answer_ms": c.answer_ms, "paid_ms": c.paid_ms,
                          "reserved": money_text(c.reserved), "exhausted": getattr(c, "exhausted", False),
                          "number": c.number} for c in calls],
        "live": live,
    }
