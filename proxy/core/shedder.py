"""The global load shedder: refuse new work while the worker is behind.

Sans-I/O: the edge measures how far behind the worker is — event-loop lag and
how full its UDP receive queues are, see proxy/runtime/floodguard.py — and
feeds both to ``observe``; ``admit`` looks at the raw bytes of one message and
says whether it may go on.

While shedding, only *initial* requests are refused — requests that would
start something new (INVITE, REGISTER, OPTIONS, SUBSCRIBE, MESSAGE ... with no
To tag).  Responses, ACKs, CANCELs and in-dialog requests (To tag present)
still pass, so calls in progress finish and the work already accepted drains.
Behind is either measure over its limit; caught up is both under their resume
levels.  That hysteresis keeps it from flapping at a threshold.
"""
from __future__ import annotations

import re
from enum import Enum

__all__ = ["AnswerBudget", "Kind", "LoadShedder", "classify"]


class Kind(Enum):
    RESPONSE = "response"
    INITIAL = "initial"          # a new request: refusable
    CONTINUING = "continuing"    # ACK, CANCEL, in-dialog request: part of work already accepted


_NEVER_INITIAL = frozenset((b"ACK", b"CANCEL"))
# a To header (long or compact form) carrying a tag parameter, at a line start
_TO_TAG = re.compile(rb"\n[ \t]*(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE)


def classify(data: bytes) -> Kind:
    """What kind of message ``data`` is, from its first bytes and To header only (no parse)."""
    if data.startswith(b"SIP/2.0 "):
        return Kind.RESPONSE
    method = data[:data.find(b" ")]
    if method in _NEVER_INITIAL:
        return Kind.CONTINUING
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    return Kind.CONTINUING if _TO_TAG.search(head) else Kind.INITIAL


class LoadShedder:
    def __init__(self, max_lag: float = 0.2, resume_lag: float = 0.05,
                 max_fill: float = 0.3, resume_fill: float = 0.05) -> None:
        if not (0 <= resume_lag <= max_lag and 0 <= resume_fill <= max_fill):
            raise ValueError("needs 0 <= resume_lag <= max_lag and 0 <= resume_fill <= max_fill")
        self.max_lag = max_lag
        self.resume_lag = resume_lag
        self.max_fill = max_fill
        self.resume_fill = resume_fill
        self.shedding = False
        self.lag = 0.0               # the last lag observed, seconds
        self.fill = 0.0              # the last receive-queue fill observed, 0..1
        self.shed = 0                # requests refused (exported as metrics later)
        self.episodes = 0            # times shedding started

    def observe(self, lag: float, fill: float | None = None) -> bool:
        """Record the event-loop lag (seconds) and, when measured, the receive
        queue fill (0..1); True when shedding started or stopped."""
        self.lag = lag
        if fill is not None:
            self.fill = fill
        behind = lag > self.max_lag or self.fill > self.max_fill
        if not self.shedding and behind:
            self.shedding = True
            self.episodes += 1
            return True
        if self.shedding and lag < self.resume_lag and self.fill < self.resume_fill:
            self.shedding = False
            return True
        return False

    def admit(self, data: bytes) -> bool:
        if not self.shedding or classify(data) is not Kind.INITIAL:
            return True
        self.shed += 1
        return False

    def counters(self) -> dict[str, int]:
        return {"shed": self.shed, "episodes": self.episodes, "shedding": int(self.shedding),
                "lag_ms": int(self.lag * 1000), "queue_percent": int(self.fill * 100)}


class AnswerBudget:
    """At most ``per_second`` stateless refusals a second; the rest are dropped.

    A 503 costs a parse and a send — as much as the request it refuses — so
    answering every request of a flood keeps the worker as far behind as
    serving it would, and every 503 to a spoofed source is a reflection.  The
    budget keeps the courtesy for the first few and lets the rest go cheaply."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._second = -1
        self._used = 0
        self.dropped = 0             # refusals not answered for lack of budget

    def allow(self, now: float) -> bool:
        second = int(now)
        if second != self._second:
            self._second = second
            self._used = 0
        if self._used >= self.per_second:
            self.dropped += 1
            return False
        self._used += 1
        return True
