"""A watchdog for faust's table recovery.

After a rebalance faust restores the ``calls`` table from its changelog before
the agent sees any event.  Now and then that restore never ends: the consumer
is assigned the changelog partitions but receives nothing, and faust logs
"No event received for active tp ... since recovery start" every few seconds
for ever (faust-streaming/faust #74, robinhood/faust #218; seen here once in
about ten kill -9 take-overs on the embedded broker).  Meanwhile no CDR is
written for any call of those partitions.

The cure that works is the one an operator would apply: restart the process.
``RecoveryWatch`` notices a recovery that has made no progress (the number of
changelog records still to read has not moved) for ``stall_seconds`` and the
process exits with ``EXIT_STALLED``; its supervisor (`up`, a container's
wrapper, systemd) starts it again and the new member recovers from the
changelog.  Nothing is lost: offsets are committed only after the table has
the events.

``progress`` is pure (a state and a reading in, a verdict out); ``watch``
runs it in a thread, reading faust's recovery attributes, because the stalled
event loop is the thing being watched.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("cdr.recovery")

EXIT_STALLED = 75            # EX_TEMPFAIL: try again


@dataclass(frozen=True)
class Reading:
    in_recovery: bool
    remaining: int           # changelog records still to read


@dataclass(frozen=True)
class Progress:
    remaining: int | None = None     # the last count seen while recovering
    since: float = 0.0               # when it last changed (or recovery began)


def progress(state: Progress, reading: Reading, now: float, stall_seconds: float) -> tuple[Progress, bool]:
    """The new state, and whether recovery has stalled for ``stall_seconds``."""
    if not reading.in_recovery:
        return Progress(), False
    if state.remaining is None or reading.remaining != state.remaining:
        return Progress(reading.remaining, now), False
    return state, now - state.since >= stall_seconds


def watch(read: Callable[[], Reading], stall_seconds: float, *, interval: float = 1.0,
          exit: Callable[[int], None] = os._exit) -> threading.Thread:
    """Check ``read()`` every ``interval`` seconds in a daemon thread; on a stall,
    one error line and ``exit(EXIT_STALLED)`` (os._exit: faust's loop is stuck)."""
    def run() -> None:
        state = Progress()
        while True:
            time.sleep(interval)
            try:
                reading = read()
            except Exception:        # noqa: BLE001 - faust not started yet or stopping: look again
                continue
            state, stalled = progress(state, reading, time.monotonic(), stall_seconds)
            if stalled:
                line = (f"error: CDR: table recovery made no progress for {stall_seconds:.0f} s "
                        f"({reading.remaining} changelog records left): restarting")
                log.error(line)
                print(line, file=sys.stderr, flush=True)
                exit(EXIT_STALLED)
                return
    thread = threading.Thread(target=run, name="cdr-recovery-watch", daemon=True)
    thread.start()
    return thread


def faust_reading(app) -> Reading:
    """What the watch needs from a faust app's table manager."""
    recovery = app.tables.recovery
    return Reading(bool(recovery.in_recovery), int(recovery.active_remaining_total()))
