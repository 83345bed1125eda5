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
