"""What each running proxy worker has loaded, published as a small file.

Provisioning and routing changes reach a running proxy by polling: each worker
reads the stores' change counters every ``provisioning.reload_seconds`` and
reloads when one moved (proxy/provisioning/live.py, proxy/routing/live.py).
This module lets anyone outside the worker tell when a change has been
applied, instead of guessing with a sleep: every worker keeps
``DATA_DIR/run/worker-<index>.loaded`` up to date, a JSON object

    {"worker": 0, "pid": 4242,
     "provisioning": 12,           # change_log version of the snapshot in use
     "routing": 7,                 # routing_change_log version of the snapshot in use
     "gateways_down": ["gw-b"]}    # gateways the prober holds down, sorted

written at start-up (before WORKER READY) and rewritten, atomically (a
temporary file renamed over it), whenever a value changes; the worker removes
it when it stops.  So "the proxy has applied `route add`" is: every worker's
file shows a routing version >= the store's version after the change (the
tests' ``wait_until_loaded`` in tests/harness/proxy.py).  A file costs nothing
on the hot path: it is compared and written only on the housekeeping tick.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..infra.runfiles import PublishedFile

__all__ = ["LoadedState", "read_loaded", "state_path"]

log = logging.getLogger("sipledger.loaded")

SUFFIX = ".loaded"


def state_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"worker-{index}{SUFFIX}"


class LoadedState(PublishedFile):
    """One worker's file; ``update`` writes only when something changed."""

    def __init__(self, run_dir: Path, index: int) -> None:
        super().__init__(state_path(run_dir, index))
        self.index = index

    def update(self, provisioning: int, routing: int, gateways_down: Iterable[str] = ()) -> bool:
        return self.publish({"worker": self.index, "pid": os.getpid(), "provisioning": int(provisioning),
                             "routing": int(routing), "gateways_down": sorted(gateways_down)})


def read_loaded(run_dir: Path) -> list[dict]:
    """Every worker's published state under ``run_dir`` (DATA_DIR/run), by worker index."""
    states = []
    for path in sorted(Path(run_dir).glob(f"worker-*{SUFFIX}")):
        try:
            states.append(json.loads(path.read_text()))
        except (OSError, ValueError):          # being replaced right now: next poll
            continue
    return sorted(states, key=lambda s: s.get("worker", 0))
