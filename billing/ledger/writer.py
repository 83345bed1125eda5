"""The ledger's writer thread: SQL work off the billing service's event loop, with group commit.

The service answers authorizations from its loop thread, so nothing there may
wait for SQLite.  Every write goes to this one thread instead, which batches
what is queued into one transaction (one fsync for many money events: the
ledger runs ``synchronous = FULL``) and resolves each caller's future on the
loop.  One thread also keeps the ledger's one-writer rule inside the process:
``seq`` order is commit order.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

from .store import LedgerStore

__all__ = ["Writer"]


class Writer:
    """Runs store work on one thread.  ``txn(fn)``: ``fn(conn)`` inside a write
    transaction shared with whatever else is queued (group commit; a failing
    batch is retried one by one so only the failing request fails).
    ``call(fn)``: ``fn()`` alone (account writes)."""

    def __init__(self, store: LedgerStore, loop: asyncio.AbstractEventLoop, batch: int = 512):
        self.store = store
        self.loop = loop
        self.batch = batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self.commits = 0
        self._thread.start()

    def txn(self, fn: Callable[[Any], Any]) -> asyncio.Future:
        future = self.loop.create_future()
        self._queue.put(("txn", fn, future))
        return future

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
        def done() -> None:
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(done)
        except RuntimeError:
            pass                                    # loop closed: nobody waits any more

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if item[0] == "call":
                self._one_call(item)
                continue
            batch = [item]
            pending, has_pending = None, False
            while len(batch) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
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
        try:
            self._resolve(future, fn())
        except BaseException as exc:            # noqa: BLE001 - handed to the awaiting side
            self._resolve(future, error=exc)

    def _txn_batch(self, batch) -> None:
        try:
            results = []
            with self.store.transaction() as conn:
                for _, fn, _ in batch:
                    results.append(fn(conn))
            self.commits += 1
            for (_, _, future), result in zip(batch, results):
                self._resolve(future, result)
            return
        except BaseException as exc:            # noqa: BLE001
            if len(batch) == 1:
                self._resolve(batch[0][2], error=exc)
                return
        for item in batch:                      # isolate the failing request
            self._txn_batch([item])


