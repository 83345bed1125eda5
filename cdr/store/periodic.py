"""Store housekeeping the API process runs now and then, in a thread so its
event loop keeps serving (statistics roll-up, trace retention)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """``work()`` in a thread, then ``interval_s`` of rest, until ``stop()``.
    A failure (ClickHouse down) is logged as ``what`` and tried again next time."""

    def __init__(self, what: str, work: Callable[[], None], interval_s: float) -> None:
        self.what, self.work, self.interval_s = what, work, interval_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.work)
            except Exception as exc:
                log.warning("%s failed: %s", self.what, exc)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
