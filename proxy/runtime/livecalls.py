"""Each worker's live calls, published as a small file for the API and the CLI.

``DATA_DIR/run/calls-worker-<i>.json`` is one JSON object

    {"worker": 0, "pid": 4242, "written_ms": ..., "total": 3, "truncated": false,
     "calls": [{"call_id": ..., "state": "confirmed", ...}, ...]}   # proxy/core/livecalls.py

rewritten by the housekeeping tick (every ``provisioning.reload_seconds``,
1 s by default) when the list changed, and removed when the worker stops.

Why a file and not a request to the workers: the list is read by people and
dashboards, where a second of age is fine; a file costs the worker nothing
while nobody reads it and nothing on the signalling path (one walk of the
call tables and one write per second, skipped when nothing changed, and no
write at all on an idle worker); the API reads N small files without a
connection to each worker or a new socket protocol.  Durations are computed
by the reader from ``answered_ms``, so the file does not change every second
of a long call.  At most ``MAX_CALLS`` rows per worker (``total`` counts
them all).  Measured with 5000 answered calls on one worker: building the
rows 9 ms, a changed file (1.2 MB, ~245 bytes a call) 24 ms, an unchanged
tick 9 ms; the API's merged list 14 ms.  A file whose ``pid`` is not running
is a dead worker's, ignored.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.livecalls import live_calls
from ..infra import clock
from ..infra.runfiles import PublishedFile, pid_alive

if TYPE_CHECKING:  # pragma: no cover
    from ..core.engine import Core

__all__ = ["LiveCallsFile", "read_live_calls", "MAX_CALLS"]

log = logging.getLogger("sipledger.livecalls")

MAX_CALLS = 5000
PREFIX, SUFFIX = "calls-worker-", ".json"


def calls_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"{PREFIX}{index}{SUFFIX}"


class LiveCallsFile(PublishedFile):
    """One worker's file; ``publish_calls`` writes only when the list changed."""

    def __init__(self, run_dir: Path, index: int, limit: int = MAX_CALLS) -> None:
        super().__init__(calls_path(run_dir, index))
        self.index = index
        self.limit = limit

    def publish_calls(self, core: "Core") -> bool:
        rows, total = live_calls(core, self.index, self.limit)
        return self.publish({"worker": self.index, "pid": os.getpid(), "written_ms": clock.now_ms(),
                             "total": total, "truncated": total > len(rows), "calls": rows},
                            unchanged_if=(rows, total))


def read_live_calls(run_dir: Path) -> list[dict[str, Any]]:
    """The published state of every running worker, by worker index; files of
    workers that are gone (their pid does not run) and unreadable ones are skipped."""
    states = []
    for path in Path(run_dir).glob(f"{PREFIX}*{SUFFIX}"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):          # being replaced right now: the next read has it
            continue
        if isinstance(state, dict) and pid_alive(state.get("pid")):
            states.append(state)
    return sorted(states, key=lambda s: s.get("worker", 0))
