"""The ledger's writer thread: SQL work off the billing service's event loop, with group commit.

The service answers authorizations from its loop thread, so nothing there may
wait for SQLite.  Every write goes to this one thread instead, which batches
what is queued into one transaction (one fsync for many money events: the
ledger runs ``synchronous = FULL``) and resolves each caller's future on the
loop.  One thread also keeps the ledger's one-writer rule inside the process:
``seq`` order is commit order.

Appends (``append``) are the per-call traffic (a reservation per answered
call, a release, a debit per CDR leg).  Consecutive ones in a batch are
written as *one* ``append_in`` (one id lookup and one multi-row INSERT for all
of them, instead of two statements each: SQLAlchemy's per-statement cost was
most of the writer's CPU), in queue order and in the queue position of the
first, so ``seq`` still follows submission order.  Each request keeps its own
future and its own result (the events of *its* list that were new); a batch
that fails is still retried request by request.  With ``linger_s`` a batch
of appends waits that long for more before it commits (PostgreSQL's
``commit_delay``): fewer transactions and fsyncs under load, for steps whose
persistence nobody waits for but the next Kafka offset commit.
"""
from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from proxy.contract.ledger import LedgerEvent

from .events import Problem
from .store import LedgerStore

__all__ = ["Writer"]


class Writer:
    """Runs store work on one thread.  ``txn(fn)``: ``fn(conn)`` inside a write
    transaction shared with whatever else is queued (group commit; a failing
    batch is retried one by one so only the failing request fails).
    ``call(fn)``: ``fn()`` alone (account writes)."""

    def __init__(self, store: LedgerStore, loop: asyncio.AbstractEventLoop, batch: int = 512,
                 linger_s: float = 0.0):
        self.store = store
        self.loop = loop
        self.batch = batch
        self.linger_s = linger_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self.commits = 0                            # group transactions
        self.calls = 0                              # ``call`` requests (each its own transaction)
        self._thread.start()

    def txn(self, fn: Callable[[Any], Any]) -> asyncio.Future:
        future = self.loop.create_future()
        self._queue.put(("txn", fn, future))
        return future

    def append(self, events: Iterable[LedgerEvent], problems: Iterable[Problem] = (),
               outbox: Iterable[tuple[str, str, bytes]] = ()) -> asyncio.Future:
        """``store.append_in(conn, events, problems=, outbox=)`` in a group
        transaction, merged with the appends queued next to it; resolves to
        the events of ``events`` that were new (with their ``seq``)."""
        future = self.loop.create_future()
        self._queue.put(("txn", _Append(events, problems, outbox), future))
        return future

    def append_many(self, requests: list[tuple[list[LedgerEvent], list[Problem], list[tuple[str, str, bytes]]]]
                    ) -> list[asyncio.Future]:
        """``append`` for each request, queued as one item: the writer takes
        them into the same transaction (up to its batch size)."""
        items = [("txn", _Append(*request), self.loop.create_future()) for request in requests]
        if items:
            self._queue.put(("many", items, None))
        return [future for _, _, future in items]

    def call(self, fn: Callable[[], Any]) -> asyncio.Future:
        future = self.loop.create_future()
        self._queue.put(("call", fn, future))
        return future

    async def barrier(self) -> None:
        """Returns once everything submitted before is committed."""
        await self.txn(lambda conn: None)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _resolve(self, future: asyncio.Future, result: Any = None, error: BaseException | None = None):
        self._resolve_all([(future, result, error)])

    def _resolve_all(self, outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
        """Hand results to the loop: one wake-up for a whole batch."""
        def done() -> None:
            for future, result, error in outcomes:
                if future.cancelled():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(done)
        except RuntimeError:
            pass                                    # loop closed: nobody waits any more

    def _run(self) -> None:
        backlog: collections.deque = collections.deque()   # the rest of an ``append_many``

        def take(block: bool, timeout: float | None = None):
            if backlog:
                return backlog.popleft()
            item = self._queue.get(timeout=timeout) if block else self._queue.get_nowait()
            if item is not None and item[0] == "many":
                backlog.extend(item[1])
                return backlog.popleft()
            return item

        while True:
            item = take(True)
            if item is None:
                return
            if item[0] == "call":
                self._one_call(item)
                continue
            batch = [item]
            pending, has_pending = None, False
            # a batch of appends only may wait ``linger_s`` for more (one commit, one
            # fsync for them all); anything else (a barrier, a money command) ends it
            linger_until = time.monotonic() + self.linger_s if isinstance(item[1], _Append) else 0.0
            while len(batch) < self.batch:
                try:
                    wait = linger_until - time.monotonic()
                    nxt = take(True, wait) if wait > 0 and not backlog else take(False)
                except queue.Empty:
                    break
                if nxt is not None and not isinstance(nxt[1], _Append):
                    linger_until = 0.0
                if nxt is None or nxt[0] != "txn":
                    pending, has_pending = nxt, True
                    break
                batch.append(nxt)
            self._txn_batch(batch)
            if has_pending:
                if pending is None:
                    return
                self._one_call(pending)

    def _one_call(self, item) -> None:
        _, fn, future = item
        self.calls += 1
        try:
            self._resolve(future, fn())
        except BaseException as exc:            # noqa: BLE001 - handed to the awaiting side
            self._resolve(future, error=exc)

    def _txn_batch(self, batch) -> None:
        try:
            results: list[Any] = []
            with self.store.transaction() as conn:
                run: list[_Append] = []
                for _, fn, _ in batch:
                    if isinstance(fn, _Append):
                        run.append(fn)
                        continue
                    results += _merged(self.store, conn, run)
                    run = []
                    results.append(fn(conn))
                results += _merged(self.store, conn, run)
            self.commits += 1
            self._resolve_all([(future, result, None) for (_, _, future), result in zip(batch, results)])
            return
        except BaseException as exc:            # noqa: BLE001
            if len(batch) == 1:
                self._resolve(batch[0][2], error=exc)
                return
        for item in batch:                      # isolate the failing request
            self._txn_batch([item])




class _Append:
    """One ``Writer.append`` request (merged with its neighbours by ``_append_run``)."""
    __slots__ = ("events", "problems", "outbox")

    def __init__(self, events: Iterable[LedgerEvent], problems: Iterable[Problem],
                 outbox: Iterable[tuple[str, str, bytes]]):
        self.events, self.problems, self.outbox = list(events), list(problems), list(outbox)


def _merged(store: LedgerStore, conn, run: list[_Append]) -> list[list[LedgerEvent]]:
    """``run``'s appends as one ``append_in``; each request's share of the new
    events: those of its own list it was the first to name (a later request
    naming the same id would have found it there already)."""
    if not run:
        return []
    events = [e for a in run for e in a.events]
    new = {e.id: e for e in store.append_in(conn, events, problems=[p for a in run for p in a.problems],
                                            outbox=[o for a in run for o in a.outbox])}
    out = []
    for a in run:
        mine = []
        for e in a.events:
            stored = new.pop(e.id, None)
            if stored is not None:
                mine.append(stored)
        out.append(mine)
    return out
