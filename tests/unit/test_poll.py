"""The suite's one polling helper (tests/harness/poll.py)."""
from __future__ import annotations

import time

import pytest

from tests.harness.poll import aeventually, eventually


def counter(ready_at: int):
    calls = []

    def predicate():
        calls.append(1)
        return len(calls) if len(calls) >= ready_at else 0
    return predicate, calls


def test_returns_the_first_truthy_value():
    predicate, calls = counter(3)
    assert eventually(predicate, "three calls", timeout=5, interval=0.001) == 3
    assert len(calls) == 3


def test_fails_naming_what_and_the_last_value():
    with pytest.raises(AssertionError, match=r"gave up after 0\.05s waiting for the impossible; last value: \[\]"):
        eventually(lambda: [], "the impossible", timeout=0.05, interval=0.01)


def test_fail_false_returns_the_last_value():
    assert eventually(lambda: 0, timeout=0.02, interval=0.01, fail=False) == 0


def test_checks_once_more_at_the_deadline():
    start = time.monotonic()
    assert eventually(lambda: time.monotonic() - start >= 0.05, timeout=0.05, interval=10)


def test_a_raising_predicate_stops_the_wait():
    def boom():
        raise RuntimeError("the process died")
    with pytest.raises(RuntimeError, match="the process died"):
        eventually(boom, timeout=5)


async def test_async_flavour_takes_plain_and_async_predicates():
    predicate, _ = counter(2)
    assert await aeventually(predicate, "two calls", timeout=5, interval=0.001) == 2

    async def ready():
        return "yes"
    assert await aeventually(ready, "an async predicate") == "yes"
    with pytest.raises(AssertionError, match="waiting for nothing; last value: None"):
        await aeventually(lambda: None, "nothing", timeout=0.02, interval=0.01)
    assert await aeventually(lambda: "", timeout=0.02, interval=0.01, fail=False) == ""
