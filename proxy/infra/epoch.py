"""Which incarnation of the embedded broker the clients talk to (docs/operations.md).

Tansu keeps everything in memory: after a restart its topics start again at
offset 0 and its consumer groups have no committed offsets.  An offset is
therefore only meaningful together with the broker incarnation that gave it.
`sipledger up` names each incarnation: it writes a fresh ``broker_epoch`` to
DATA_DIR/run/kafka.json right after (re)starting the broker and *before* it
creates the topics.  Nobody can produce to or fetch from the new broker
before its topics exist, so a client that reads the epoch after a fetch or
an acknowledgement knows which broker answered:

* a consumer that fetched from a stale position in a fresh broker sees a new
  epoch before it commits anything (proxy/infra/clickhouse/sink.py);
* a producer stamps a delivered record with the epoch only when the epoch
  read before sending equals the one read after the acknowledgement
  (proxy/events/publisher.py).

Without ``up`` (an external cluster, or a process run alone) there is no file
and the epoch is "" forever: a durable broker has one incarnation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .config import KAFKA_RUN_FILE

__all__ = ["BrokerEpoch", "new_epoch"]


def new_epoch(broker_pid: int | None, now_ms: int) -> str:
    """A name no earlier incarnation had (pid and start time)."""
    return f"{broker_pid or 0}-{now_ms}"


class BrokerEpoch:
    """``epoch()``: the current broker incarnation, read from ``run_dir``/kafka.json.

    Cheap enough to call after every fetch: the file is parsed again only
    when its inode, size or mtime changed (``up`` replaces it atomically)."""

    def __init__(self, run_dir: str | os.PathLike | None) -> None:
        self.path = Path(run_dir) / KAFKA_RUN_FILE if run_dir is not None else None
        self._stamp: tuple[int, int, int] | None = None
        self._epoch = ""

    def __call__(self) -> str:
        if self.path is None:
            return ""
        try:
            st = os.stat(self.path)
        except OSError:
            return self._epoch      # between up's unlink and rewrite: the last one known
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return self._epoch
            epoch = data.get("broker_epoch") if isinstance(data, dict) else None
            self._epoch = epoch if isinstance(epoch, str) else ""
            self._stamp = stamp
        return self._epoch
