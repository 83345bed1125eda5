"""proxy/infra/heap.py: what every service process does once started."""
from __future__ import annotations

import gc

from proxy.infra import heap


def test_settle_freezes_what_exists_and_sets_the_thresholds():
    before = gc.get_threshold()
    try:
        kept = [object() for _ in range(10)]             # noqa: F841 (alive while frozen)
        heap.settle(12_345, 7, 3, collect=True)
        assert gc.get_threshold() == (12_345, 7, 3)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
