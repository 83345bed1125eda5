"""Small state files under DATA_DIR/run that other processes read (the CLI, tests).

Written whole or not at all (a temporary file renamed over the old one), so a
reader never sees half a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


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
