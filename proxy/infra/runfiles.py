"""Small state files under DATA_DIR/run that other processes read (the CLI, tests).

Written whole or not at all (a temporary file renamed over the old one), so a
reader never sees half a file.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("sipledger.runfiles")


def write_json_atomically(path: Path, state: object) -> None:
    """Replace ``path`` with ``state`` as one JSON line; raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state) + "\n")
    os.replace(tmp, path)


def pid_alive(pid: object) -> bool:
    """Whether the process that wrote a state file still runs (a file left by a
    worker that is gone must not be trusted)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PublishedFile:
    """One process's state file: rewritten only when what it says changed (a
    housekeeping tick may publish every second at no cost when nothing did),
    removed when the process stops.  Writing is informational: a failure is
    logged and the caller goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: object = None

    def publish(self, state: object, *, unchanged_if: object = None) -> bool:
        """Write ``state`` unless ``unchanged_if`` (default: the state itself)
        equals what the last successful write was made from."""
        key = state if unchanged_if is None else unchanged_if
        if key == self._last:
            return False
        try:
            write_json_atomically(self.path, state)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)
            return False
        self._last = key
        return True

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
