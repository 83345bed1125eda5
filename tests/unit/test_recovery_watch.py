"""cdr/recovery_watch.py: a faust table recovery that makes no progress ends the
worker (its supervisor restarts it); one that moves, or is over, does not."""
from __future__ import annotations

import threading

from cdr.recovery_watch import EXIT_STALLED, Progress, Reading, progress, watch


def run(readings: list[tuple[float, Reading]], stall: float = 30.0) -> list[bool]:
    state, verdicts = Progress(), []
    for now, reading in readings:
        state, stalled = progress(state, reading, now, stall)
        verdicts.append(stalled)
    return verdicts


def test_a_recovery_stuck_at_the_same_count_is_stalled_after_the_limit():
    stuck = Reading(True, 12)
    assert run([(0, stuck), (10, stuck), (29.9, stuck), (30, stuck)]) == [False, False, False, True]


def test_a_recovery_that_moves_is_never_stalled_however_long_it_takes():
    assert not any(run([(t * 20.0, Reading(True, 1000 - t)) for t in range(20)]))


def test_the_clock_starts_again_at_each_recovery():
    stuck = Reading(True, 5)
    done = Reading(False, 0)
    assert run([(0, stuck), (25, stuck), (26, done), (40, stuck), (69, stuck), (70, stuck)]) == \
        [False, False, False, False, False, True]


def test_the_thread_exits_the_process_with_its_status_and_a_reason():
    exited = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        exited.set()
    watch(lambda: Reading(True, 3), stall_seconds=0.05, interval=0.01, exit=fake_exit)
    assert exited.wait(5) and codes == [EXIT_STALLED]
