"""Service logs that hostile traffic cannot flood: repeated lines are
rate-limited, files are rotated by size.

* ``RepeatFilter`` lets the first ``burst`` records with the same key (logger,
  level, message template, exception type) through per ``interval`` seconds,
  then drops the rest; the first one let through in the next interval says
  how many were suppressed.  A fuzz run that logged 26–40 MB of identical
  tracebacks now logs a few lines a minute.
* ``RotatingLog`` is a byte sink the supervisors copy a child's stdout and
  stderr into (proxy/infra/supervise.py): ``name.log`` is renamed to
  ``name.log.1`` (… ``.N``) when it passes ``max_bytes``.
* ``setup_service_logging`` is the one logging setup of a service process
  (stderr, which its supervisor rotates, with the filter on it).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

_MAX_KEYS = 1024        # distinct keys tracked; beyond it the table starts afresh


class RepeatFilter(logging.Filter):
    def __init__(self, burst: int = 10, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple, list] = {}      # key -> [window start, count, suppressed]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, str(record.msg), exc)
        now = self.clock()
        with self._lock:
            state = self._seen.get(key)
            if state is None:
                if len(self._seen) >= _MAX_KEYS:
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                return True
            if now - state[0] >= self.interval:
                suppressed = state[2]
                state[:] = [now, 1, 0]
                if suppressed:
                    record.msg = f"{record.msg} [{suppressed} similar lines suppressed in the last " \
                                 f"{self.interval:g} s]"
                return True
            state[1] += 1
            if state[1] <= self.burst:
                if state[1] == self.burst:
                    record.msg = f"{record.msg} [repeated {self.burst} times: similar lines are " \
                                 f"suppressed for up to {self.interval:g} s]"
                return True
            state[2] += 1
            return False


class RotatingLog:
    """Append-only byte log rotated by size; safe for several writer threads."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._fd < 0:
                return
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            os.write(self._fd, data)
            self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def setup_service_logging(fmt: str, *, burst: int = 10, interval: float = 60.0,
                          level: int = logging.INFO) -> RepeatFilter:
    """Log to stderr (the supervisor copies it into a rotated file) with
    repeated lines rate-limited.  Returns the filter (tests read it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    repeat = RepeatFilter(burst, interval)
    handler.addFilter(repeat)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return repeat
