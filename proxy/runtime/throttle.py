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
    """Each message template (the format string) gets its own interval, so a rare
    line ("overload over") is never swallowed by a frequent one before it."""

    def __init__(self, logger: logging.Logger, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._next: dict[str, float] = {}          # template -> when it may log again
        self._suppressed: dict[str, int] = {}      # template -> held back since its last line

    def __call__(self, level: int, message: str, *args: object) -> None:
        now = self.clock()
        if now < self._next.get(message, 0.0):
            self._suppressed[message] = self._suppressed.get(message, 0) + 1
            return
        self._next[message] = now + self.every     # templates are literals in the code: few keys
        held = self._suppressed.pop(message, 0)
        if held:
            message += " (and %d more like it since the last line)"
            args = (*args, held)
        self.logger.log(level, message, *args)
