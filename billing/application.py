"""The money commands, once: one application service for the billing service and the offline CLI.

Creating, changing and deleting accounts, top-ups / adjustments / refunds, and
reading a balance are the same rules wherever they run.  ``BillingApplication``
is those rules, written once, with the command API of an event-sourced
application (as in the ``eventsourcing`` library): *get* the account from a
repository, *mutate* it with the pure functions of billing/ledger/ (the
validated event of ``money_event``, the account of ``build_account``), *save*
what that produced through the repository.  It runs against one of two
repositories:

* ``LiveLedger`` (billing/credit/live.py) inside the billing service: accounts
  and balances from credit control's memory, saves through the ledger's writer
  thread, then applied to memory (live calls react at once).  Reached over the
  admin RPC (billing/rpc.py, billing/client.py).
* ``StoredLedger`` (below) when no service runs: the SQL ledger itself, under
  the ledger's lock (billing/client.py takes it), balances folded from it.  So
  ``sipledger account topup`` works before ``sipledger up`` too; the service
  folds it in at its next start.

Exactly once: a top-up / adjustment / refund's event id is a hash of (kind,
account, idempotency key).  The same request again -- a retry after a
timeout, a second click -- finds the event already there and is answered with
it (``replayed: true``) without checking it again; the same key with another
amount is refused (409).  Commands are coroutines because the live repository
waits for the writer thread; the stored one never waits, and the client runs
a command with ``asyncio.run``.
"""
from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Protocol

from proxy.contract.ledger import LedgerEvent
from proxy.infra import clock

from .errors import LedgerError
from .ledger.accounts import AccountInfo, account_dict, balance_view, build_account
from .ledger.events import check_floor, event_dict, money_event, same_request
from .ledger.fold import fold
from .ledger.store import LedgerStore
from .money import money_text, parse_amount
from .rpc import RpcRequest

__all__ = ["Repository", "BillingApplication", "StoredLedger", "stored_view"]


class Repository(Protocol):
    """Where the application gets accounts and money from and saves changes to."""

    async def account(self, account_id: str) -> AccountInfo | None: ...

    async def balance(self, account_id: str) -> Decimal: ...

    async def stored_event(self, event_id: str) -> LedgerEvent | None: ...

    async def save_events(self, events: list[LedgerEvent]) -> list[LedgerEvent]:
        """Append the events whose id is new; returns those (with their ``seq``)."""

    async def save_account(self, info: AccountInfo, *, create: bool) -> None: ...

    async def delete_account(self, account_id: str) -> None: ...

    async def view(self, info: AccountInfo) -> dict:
        """The account's money as the API shows it (amounts as text)."""

    def status(self) -> dict:
        """What ``ping`` answers."""


class BillingApplication:
    def __init__(self, repository: Repository, *, default_currency: str = "EUR"):
        self.repository = repository
        self.default_currency = default_currency
        self._money_lock = asyncio.Lock()

    async def execute(self, req: RpcRequest) -> dict:
        """One admin RPC request (billing/rpc.py), whichever side runs it."""
        if req.op == "ping":
            return self.repository.status()
        if req.op == "balance":
            return await self.balance(req.account)
        if req.op == "account.put":
            return await self.put_account(req.account, req.fields, create=req.create)
        if req.op == "account.delete":
            return await self.delete_account(req.account)
        if req.op == "money":
            return await self.money(req.account, req.kind, req.amount, req.key, req.note,
                                    cdr_id=req.cdr_id, leg=req.leg)
        raise LedgerError(f"unknown operation {req.op!r}", status=400)

    # -- get ----------------------------------------------------------------------------------
    async def get(self, account: str) -> AccountInfo:
        info = await self.repository.account(account) if account else None
        if info is None:
            raise LedgerError(f"account {account} does not exist", status=404)
        return info

    async def balance(self, account: str) -> dict:
        return await self.repository.view(await self.get(account))

    # -- commands -------------------------------------------------------------------------------
    async def put_account(self, account: str, fields: dict, *, create: bool) -> dict:
        """Create (409 if it exists) or change (404 if it does not) an account."""
        existing = await self.repository.account(account) if account else None
        if create and existing is not None:
            raise LedgerError(f"account {account} already exists", status=409)
        if not create and existing is None:
            raise LedgerError(f"account {account} does not exist", status=404)
        info = build_account(account, fields, existing=existing, now_ms=clock.now_ms(),
                             default_currency=self.default_currency)
        await self.repository.save_account(info, create=create)
        return account_dict(info)

    async def delete_account(self, account: str) -> dict:
        """Delete an account without ledger events (the store refuses one with events)."""
        await self.repository.delete_account(account)
        return {"deleted": account}

    async def money(self, account: str, kind: str, amount: str, key: str, note: str = "", *,
                    cdr_id: str = "", leg: int = -1) -> dict:
        """A top-up / adjustment / refund, exactly once per idempotency key."""
        async with self._money_lock:               # check + save + apply: one request at a time
            info = await self.get(account)
            event = money_event(info, kind, parse_amount(amount), key, ts_ms=clock.now_ms(), note=note,
                                cdr_id=cdr_id, leg=leg)
            stored = await self.repository.stored_event(event.id)
            replayed = stored is not None
            if stored is None:
                check_floor(info, event, await self.repository.balance(info.id))
                new = await self.repository.save_events([event])
                replayed = not new
                stored = new[0] if new else await self.repository.stored_event(event.id)
            if stored is None or not same_request(stored, event):
                raise LedgerError(f"idempotency key {key!r} was used for a different request"
                                  + (f" ({stored.kind} {money_text(stored.amount)})" if stored else ""),
                                  status=409)
            result = await self.repository.view(info)
            result.update(event=event_dict(stored), replayed=replayed)
            return result


# -- the repository when no service runs --------------------------------------------------------

def stored_view(store: LedgerStore, info: AccountInfo) -> dict:
    """The account's money folded from the durable ledger (no live holds)."""
    state = fold(store.iter_events(account=info.id))
    book = state.book(info.id)
    return balance_view(info, balance=book.balance, reserved=book.reserved, live=False,
                        calls=[c for _, c in sorted(state.open_calls().items())])


class StoredLedger:
    """The SQL ledger as the application's repository.  The caller holds the
    ledger's lock (billing/ledger/store.py ``ServiceLock``): no service runs."""

    def __init__(self, store: LedgerStore):
        self.store = store

    async def account(self, account_id: str) -> AccountInfo | None:
        return self.store.get_account(account_id)

    async def balance(self, account_id: str) -> Decimal:
        return fold(self.store.iter_events(account=account_id)).book(account_id).balance

    async def stored_event(self, event_id: str) -> LedgerEvent | None:
        return self.store.get_event(event_id)

    async def save_events(self, events: list[LedgerEvent]) -> list[LedgerEvent]:
        return self.store.append(events)

    async def save_account(self, info: AccountInfo, *, create: bool) -> None:
        self.store.put_account(info, create=create)

    async def delete_account(self, account_id: str) -> None:
        self.store.delete_account(account_id)

    async def view(self, info: AccountInfo) -> dict:
        return stored_view(self.store, info)

    def status(self) -> dict:
        return {"live": False}
