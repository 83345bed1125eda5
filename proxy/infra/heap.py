"""The cycle collector's settings for a long-running service process.

Every sipledger process (proxy worker, CDR worker, billing, RADIUS, API)
ends its start-up with objects that live as long as it does (modules,
stores, tables recovered, bindings) and then allocates mostly short-lived,
acyclic objects per call or per record.  ``settle`` moves the first out of
the collector's sight (``gc.freeze``: no later collection walks them again)
and sets the thresholds the process measured for the second.  The values,
and why, stay with each caller: the processes allocate differently.
"""
from __future__ import annotations

import gc

__all__ = ["settle"]


def settle(young: int, middle: int, old: int, *, collect: bool = False) -> None:
    """Freeze what exists now and set the generations' thresholds; ``collect``
    first frees what start-up left as garbage rather than freezing it."""
    if collect:
        gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)
