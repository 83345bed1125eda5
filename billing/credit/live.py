"""The money commands' repository inside the billing service: live state first, the ledger behind it.

billing/application.py decides; this is where the service's answers come
from and its changes go.  Accounts and balances are read from credit
control's memory (billing/credit/control.py: the fold of the ledger plus
what happened since), so a top-up is checked against the balance live calls
see.  Saving goes through the ledger's writer thread (billing/ledger/writer.py)
and only then into memory, with credit control's reactions (revived or
shrunk calls, notifications) carried out by the service -- a money event is
durable before anyone is told about it.  Only the event loop thread uses it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

from billing.ledger.accounts import AccountInfo
from billing.ledger.store import LedgerStore
from billing.ledger.writer import Writer
from billing.money import ZERO
from proxy.contract.ledger import LedgerEvent
from proxy.infra.clock import now_ms

from .control import CreditControl, Effects

if TYPE_CHECKING:
    from billing.rating.model import RatesSnapshot
    from billing.rating.store import RatesStore
    from billing.rerate import RerateRun

_T = TypeVar("_T")

__all__ = ["LiveLedger"]


class LiveLedger:
    def __init__(self, core: CreditControl, store: LedgerStore, writer: Writer, *,
                 carry_out: Callable[[Effects], None], status: Callable[[], dict],
                 rates: "RatesStore | None" = None, owns: Callable[[str], bool] | None = None):
        self.core = core
        # several instances: only the owner keeps an account in memory; another
        # changes it in the shared database, and the owner's poll picks that up
        self.owns = owns or (lambda account: True)
        self.rates_store = rates
        self.store = store
        self.writer = writer
        self.carry_out = carry_out           # the service's handling of credit control's effects
        self._status = status

    async def account(self, account_id: str) -> AccountInfo | None:
        return self.core.accounts.get(account_id)

    async def balance(self, account_id: str) -> Decimal:
        live = self.core.books.get(account_id)
        return live.balance if live is not None else ZERO

    async def stored_event(self, event_id: str) -> LedgerEvent | None:
        return await asyncio.to_thread(self.store.get_event, event_id)

    async def save_events(self, events: list[LedgerEvent]) -> list[LedgerEvent]:
        new = await self.writer.txn(lambda conn: self.store.append_in(conn, events))
        if new:
            self.carry_out(self.core.apply_external(new, now_ms()))
        return new

    async def save_account(self, info: AccountInfo, *, create: bool) -> None:
        await self.writer.call(lambda: self.store.put_account(info, create=create))
        if self.owns(info.id):
            self.carry_out(self.core.upsert_account(info, now_ms()))

    async def delete_account(self, account_id: str) -> None:
        await self.writer.call(lambda: self.store.delete_account(account_id))
        self.core.remove_account(account_id)

    async def view(self, info: AccountInfo) -> dict:
        return self.core.snapshot(info)

    def status(self) -> dict:
        return self._status()

    async def read(self, fn: Callable[[LedgerStore], _T]) -> _T:
        return await asyncio.to_thread(fn, self.store)

    async def rates(self) -> "RatesSnapshot":
        """Read now, not credit control's copy (it reloads within a poll interval)."""
        if self.rates_store is None:
            return self.core.rates
        return await asyncio.to_thread(self.rates_store.snapshot)

    async def save_rerate(self, events: list[LedgerEvent], run: "RerateRun") -> list[LedgerEvent]:
        def append(conn) -> list[LedgerEvent]:
            new = self.store.append_in(conn, events)
            self.store.put_run_in(conn, run)
            return new
        new = await self.writer.txn(append)
        if new:
            self.carry_out(self.core.apply_external(new, now_ms()))
        return new
