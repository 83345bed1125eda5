"""The global load shedder: refuse new work while the worker is behind.

Sans-I/O: the edge measures how far behind the worker is — the delay a message
sees now, from the event-loop lag and the time a probe datagram spends in the
UDP receive queue, see proxy/runtime/floodguard.py — and feeds it to
``observe``; ``admit`` looks at the raw bytes of one message and says whether
it may go on.

While shedding, only *initial* requests are refused — requests that would
start something new (INVITE, REGISTER, OPTIONS, SUBSCRIBE, MESSAGE ... with no
To tag).  Responses, ACKs, CANCELs and in-dialog requests (To tag present)
still pass, so calls in progress finish and the work already accepted drains.
Shedding starts when the event-loop lag is over ``max_delay``, or the UDP
queueing delay is over it *and* at least ``min_busy`` of the worker's time went
into messages it admitted: a queue full of junk the pike already drops cheaply
is not shortened by refusing the few real new calls.  It ends when both are
under ``resume_delay`` (hysteresis: no flapping at the threshold).
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
    def __init__(self, max_delay: float = 0.2, resume_delay: float = 0.05, min_busy: float = 0.5) -> None:
        if not (0 <= resume_delay <= max_delay and 0 <= min_busy <= 1):
            raise ValueError("needs 0 <= resume_delay <= max_delay and 0 <= min_busy <= 1")
        self.max_delay = max_delay
        self.resume_delay = resume_delay
        self.min_busy = min_busy
        self.shedding = False
        self.delay = 0.0             # the last delay observed, seconds
        self.busy = 0.0              # the last share of time spent on admitted messages, 0..1
        self.shed = 0                # requests refused (exported as metrics later)
        self.episodes = 0            # times shedding started

    def observe(self, lag: float, queue_delay: float = 0.0, busy: float = 1.0) -> bool:
        """Record the event-loop lag and the UDP queueing delay (seconds) and the
        share of time spent on admitted messages (0..1); True when shedding started or stopped."""
        delay = self.delay = max(lag, queue_delay)
        self.busy = busy
        behind = lag > self.max_delay or (queue_delay > self.max_delay and busy >= self.min_busy)
        if not self.shedding and behind:
            self.shedding = True
            self.episodes += 1
            return True
        if self.shedding and delay < self.resume_delay:
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
                "delay_ms": int(self.delay * 1000), "busy_percent": int(self.busy * 100)}


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
