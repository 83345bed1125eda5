"""One log line per interval for events an outsider can trigger at will.

A flood of refused connections or blocked sources must not become a flood of
log lines: the first event logs, the next ones within ``every`` seconds are
only counted, and the next line that gets through says how many were held back.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    def __init__(self, logger: logging.Logger, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._next = 0.0
        self.suppressed = 0

    def __call__(self, level: int, message: str, *args: object) -> None:
        now = self.clock()
        if now < self._next:
            self.suppressed += 1
            return
        self._next = now + self.every
        if self.suppressed:
            message += " (and %d more like it since the last line)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self.logger.log(level, message, *args)
