"""The one way tests wait for something: poll a predicate until it holds.

    value = eventually(lambda: store.get(key), "the row to be stored", timeout=10)
    rows = await aeventually(lambda: sink.stats.inserted >= 10, "the sink to insert")

``predicate`` is called at once and then every ``interval`` seconds until it
returns something truthy, which is returned.  When ``timeout`` seconds (the
monotonic clock) have passed, ``eventually`` fails with an ``AssertionError``
naming ``what`` and the predicate's last value, so the failure says what was
awaited and what was seen instead.  The predicate is always called once more
at the deadline: a slow last interval cannot make a ready condition time out.

``fail=False`` returns the last value instead of failing, for waiters whose
callers assert on the result themselves with a richer message (SIPp's
``wait_for``, FreeRADIUS's ``wait_for``): one polling loop, two ways to end.

A predicate may raise to stop waiting early (a process died, say): the
exception propagates unchanged.  ``aeventually`` is the same on an event loop;
its predicate may be a plain function or return an awaitable (an ``async def``
predicate), and it sleeps with ``asyncio.sleep`` so the loop keeps running.

Nothing here waits for a fixed time: a test that needs "nothing more happens
within X seconds" (a negative check) sleeps explicitly and says so.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_TIMEOUT", "aeventually", "eventually"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 20.0
DEFAULT_INTERVAL = 0.05


def _describe(value: object, limit: int = 2000) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"gave up after {timeout:g}s waiting for {what}; last value: {_describe(last)}")


def eventually(predicate: Callable[[], T], what: str = "the condition", timeout: float = DEFAULT_TIMEOUT,
               interval: float = DEFAULT_INTERVAL, *, fail: bool = True) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    On timeout: ``AssertionError`` naming ``what`` and the last value, or the
    last value itself with ``fail=False``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if fail:
                raise _timed_out(what, timeout, value)
            return value
        time.sleep(min(interval, remaining))


async def aeventually(predicate: Callable[[], T | Awaitable[T]], what: str = "the condition",
                      timeout: float = DEFAULT_TIMEOUT, interval: float = DEFAULT_INTERVAL, *,
                      fail: bool = True) -> T:
    """``eventually`` for coroutines: the loop keeps running between polls, and
    ``predicate`` may be ``async``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        remaining = deadline - loop.time()
        if remaining <= 0:
            if fail:
                raise _timed_out(what, timeout, value)
            return value
        await asyncio.sleep(min(interval, remaining))
