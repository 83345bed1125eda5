"""How far the archive is: what lets the publisher forget a delivered event.

The archiver (cdr/archive/sink.py, in the API process) publishes its
committed next offsets of ``sip.events`` with the broker epoch in
DATA_DIR/run/archive.json; ``up`` names the broker epoch in
DATA_DIR/run/kafka.json (proxy/infra/epoch.py).  The proxy imports neither
the archiver nor the API: it reads those two files.

The guarantee (docs/operations.md): an event leaves the outbox only when the
broker that acknowledged it is the one the archiver committed past it in;
after a broker restart every kept event goes out again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from proxy.infra.config import ARCHIVE_RUN_FILE, RUN_DIR, Config
from proxy.infra.epoch import BrokerEpoch

__all__ = ["ArchiveRetention", "archive_retention"]


def archive_retention(config: Config, data_dir: str | os.PathLike) -> "ArchiveRetention | None":
    """The proxy's retention when the embedded broker runs and the API process
    archives (it owns the archiver); None keeps delete-on-acknowledge."""
    a = config.archive
    if not (a.enabled and a.outbox_until_archived and config.api.enabled and config.kafka.mode == "embedded"):
        return None
    return ArchiveRetention(Path(data_dir) / RUN_DIR, keep_rows=a.outbox_keep_rows)


class ArchiveRetention:
    def __init__(self, run_dir: str | os.PathLike, *, keep_rows: int = 2_000_000) -> None:
        self.epoch = BrokerEpoch(run_dir)
        self.path = Path(run_dir) / ARCHIVE_RUN_FILE
        self.keep_rows = keep_rows
        self._stamp: tuple[int, int, int] | None = None
        self._position: tuple[str, dict[int, int]] | None = None

    def archived(self) -> tuple[str, dict[int, int]] | None:
        """(epoch, next offset per partition of sip.events) the archive has
        committed, or None when nothing is known."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            self._position = None
            try:
                data = json.loads(self.path.read_text())
                offsets = {int(p): int(o) for p, o in data["sip"].items()}
                if isinstance(data["epoch"], str):
                    self._position = (data["epoch"], offsets)
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass
        return self._position
