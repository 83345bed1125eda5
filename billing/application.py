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

A rerate (``rerate``, billing/rerate.py) prices a period's debited calls
again and appends corrections with the run's record in one transaction; a
balance ``at`` an instant (``balance_at``) is the fold of the events booked
until then.  Both read the SQL ledger through the repository's ``read``.

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
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Protocol, TypeVar

from proxy.contract.ledger import LedgerEvent
from proxy.infra import clock

from .errors import LedgerError
from .ledger.accounts import AccountInfo, account_dict, balance_view, build_account
from .ledger.events import check_floor, event_dict, money_event, same_request
from .ledger.fold import fold
from .ledger.store import LedgerStore
from .money import money_text, parse_amount
from .rating.model import RatesSnapshot, RatingError
from .rating.store import RatesStore
from .rerate import MAX_CHANGES_SHOWN, MAX_LEGS, RerateRun, legs_of, plan_rerate, pricer
from .rpc import RpcRequest

_T = TypeVar("_T")
MAX_EVENTS_AT = 1000                # ledger events a balance ``at`` an instant lists at most

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

    async def read(self, fn: Callable[[LedgerStore], _T]) -> _T:
        """``fn(store)``: a read of the SQL ledger, off the service's loop."""

    async def rates(self) -> RatesSnapshot:
        """Every plan and assignment as the rate store has them now."""

    async def save_rerate(self, events: list[LedgerEvent], run: RerateRun) -> list[LedgerEvent]:
        """Append a run's corrections and its record in one transaction; returns the new events."""


class BillingApplication:
    def __init__(self, repository: Repository, *, default_currency: str = "EUR", default_plan: str = ""):
        self.repository = repository
        self.default_currency = default_currency
        self.default_plan = default_plan
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
        if req.op == "rerate":
            return await self.rerate(req.from_ms, req.to_ms, account=req.account, plan=req.plan,
                                     dry_run=req.dry_run, who=req.who)
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


    # -- rerating and time travel ---------------------------------------------------------------
    async def rerate(self, from_ms: int, to_ms: int, *, account: str = "", plan: str = "",
                     dry_run: bool = False, who: str = "") -> dict:
        """Price the debited calls answered in ``[from_ms, to_ms)`` again (billing/rerate.py)
        and book a correction for each whose cost changed.  ``dry_run``: the same
        answer, nothing booked, no run recorded."""
        if not (isinstance(from_ms, int) and isinstance(to_ms, int) and 0 <= from_ms < to_ms):
            raise LedgerError("a rerate needs a period: from before to (epoch ms)")
        async with self._money_lock:               # one money command at a time: corrections count
            rates = await self.repository.rates()
            priced_with = None
            if plan:
                priced_with = rates.plans.get(plan)
                if priced_with is None:
                    raise LedgerError(f"plan {plan} does not exist", status=404)
            if account and await self.repository.account(account) is None:
                raise LedgerError(f"account {account} does not exist", status=404)
            only = account or None

            def inputs(store: LedgerStore):
                debits = store.events(kinds=["debit"], from_ms=from_ms, to_ms=to_ms, time_field="answer_ms",
                                      account=only, limit=MAX_LEGS + 1)
                if len(debits) > MAX_LEGS:
                    raise LedgerError(f"more than {MAX_LEGS} debited calls in the period: rerate it in parts")
                corrections = store.events(kinds=["rerate"], from_ms=from_ms, to_ms=to_ms,
                                           time_field="answer_ms", account=only)
                return debits, corrections, {a.id: a for a in store.list_accounts()}

            debits, corrections, accounts = await self.repository.read(inputs)
            run = RerateRun(id=str(uuid.uuid4()), who=who[:255], created_ms=clock.now_ms(), from_ms=from_ms,
                            to_ms=to_ms, account=account, plan=plan, dry_run=dry_run)
            try:
                price = pricer(rates, accounts, default_plan=self.default_plan, plan=priced_with)
            except RatingError as exc:
                raise LedgerError(str(exc)) from None
            # pricing is CPU work: off the service's loop, so authorizations are answered meanwhile
            events, changes = await asyncio.to_thread(plan_rerate, run, legs_of(debits, corrections), price)
            if not dry_run:
                await self.repository.save_rerate(events, run)
            result = run.to_dict()
            result["changes"] = [vars(c) for c in changes[:MAX_CHANGES_SHOWN]]
            return result

    async def balance_at(self, account: str, at_ms: int, *, last: int = 50) -> dict:
        """The account's balance, reservations and recent ledger as they were at ``at_ms``:
        the fold of its events booked until then (inclusive)."""
        info = await self.get(account)
        last = max(0, min(last, MAX_EVENTS_AT))
        events = await self.repository.read(lambda store: store.events(account=info.id, to_ms=at_ms + 1))
        state = fold(events)
        book = state.book(info.id)
        view = balance_view(info, balance=book.balance, reserved=book.reserved, live=False,
                            calls=[c for _, c in sorted(state.open_calls().items())])
        view.update(at_ms=at_ms, events=[event_dict(e) for e in reversed(events[-last:])] if last else [])
        return view


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

    def __init__(self, store: LedgerStore, rates: RatesStore | None = None):
        self.store = store
        self.rates_store = rates

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

    async def read(self, fn: Callable[[LedgerStore], _T]) -> _T:
        return fn(self.store)

    async def rates(self) -> RatesSnapshot:
        if self.rates_store is None:
            return RatesSnapshot(version=-1, plans={})
        return self.rates_store.snapshot()

    async def save_rerate(self, events: list[LedgerEvent], run: RerateRun) -> list[LedgerEvent]:
        with self.store.transaction() as conn:
            new = self.store.append_in(conn, events)
            self.store.put_run_in(conn, run)
        return new
