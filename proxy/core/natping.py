"""Keep-alives for NATed registrations (nathelper's natping + sipping, RFC 5626 §3.5).

A NAT forgets a UDP mapping after 30 s to a few minutes of silence; once it
has, the phone is registered but unreachable.  Every ``[nat] keepalive_seconds``
each NATed binding gets a ping through its pinhole:

- UDP: OPTIONS (Request-URI the Contact, packet to the pinhole, from the public
  socket); any final reply, even 404/405/481, proves the phone and the mapping
  alive, as in OpenSIPS.  ``keepalive_method = "CRLF"`` sends a bare CRLF CRLF
  instead: it keeps the mapping open but nothing answers, so it detects nothing.
- TCP: CRLF CRLF on the registration connection (RFC 5626 §4.4.1); the
  connection still being open is the proof (phones need not answer the ping).

A binding whose pings fail ``keepalive_failures`` times in a row is removed
from location (unless its phone registered again meanwhile) and a
``BindingDropped`` event says why.  A ping fails when its reply has not come
by the time the next one is due (as nathelper counts), not only when its
OPTIONS transaction gives up (64*T1 = 32 s): a phone behind a dead mapping is
dropped after ``keepalive_failures`` intervals, whatever the interval.

Across workers without duplicates: every worker reads the NATed bindings and
keeps its share.  A UDP binding belongs to worker ``crc32(aor, contact) mod
workers``; a TCP one to the worker that owns its connection (the only process
that can write to it).  Each binding is pinged at a fixed phase of the interval
(the same hash), so pings spread evenly instead of bursting, and at most
``max_in_flight`` OPTIONS per worker await their reply at once.  An OPTIONS
leaves from the shared public port (the pinhole accepts nothing else) and its
reply comes back there, where the runtime hands it to its Call-ID's owner: the
pinging worker picks a Call-ID it owns.

``NatPinger`` only decides (which bindings, when, dropped or not); ``NatKeepalive``
runs its decisions on the core's ports; the worker ticks it.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..contract import events as ev
from ..infra import clock
from ..sip.build import new_tag
from .keepalive import send_options
from .location import Binding, LocationError, LocationStore
from .nat import pinhole, received_target
from .node import call_owner

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Core

__all__ = ["MAX_IN_FLIGHT", "Drop", "NatKeepalive", "NatPinger", "Ping"]

log = logging.getLogger("sipledger.natping")

MAX_IN_FLIGHT = 200          # OPTIONS awaiting a reply per worker; the rest wait for the next tick
CRLF_PING = b"\r\n\r\n"

Key = tuple[str, str]        # (aor, contact)


@dataclass(frozen=True, slots=True)
class Ping:
    binding: Binding
    kind: Literal["options", "crlf"]
    expects_reply: bool      # False: a CRLF over UDP, nothing can answer it
    number: int = 0          # the binding's ping count: a late outcome of an older ping is told apart


@dataclass(frozen=True, slots=True)
class Drop:
    binding: Binding
    failures: int
    since: float             # wall-clock time of the first failed ping of the streak


class _Entry:
    __slots__ = ("binding", "next_at", "failures", "in_flight", "streak_since", "pings", "sent_at")

    def __init__(self, binding: Binding, next_at: float):
        self.binding = binding
        self.next_at = next_at
        self.failures = 0
        self.in_flight = False
        self.streak_since: float | None = None
        self.pings = 0               # pings sent so far (numbers them)
        self.sent_at = 0.0           # when the ping in flight left


def _hash(binding: Binding) -> int:
    return zlib.crc32(f"{binding.aor}\0{binding.contact}".encode("utf-8", "surrogateescape"))


class NatPinger:
    """This worker's schedule of pings (times are wall-clock seconds)."""

    def __init__(self, index: int, workers: int, interval: float, failures: int,
                 method: Literal["OPTIONS", "CRLF"] = "OPTIONS", max_in_flight: int = MAX_IN_FLIGHT):
        self.index = index
        self.workers = max(1, workers)
        self.interval = interval
        self.failures = failures
        self.method = method
        self.max_in_flight = max_in_flight
        self.entries: dict[Key, _Entry] = {}
        self.in_flight = 0
        self._queue: list[tuple[float, int, Key]] = []    # (next ping, tie-break, key)
        self._seen: set[Key] = set()                      # keys met by the current pass
        self._seq = itertools.count()
        self.drops: list[Drop] = []                        # decided by ``due``: for the runner to apply

    def mine(self, binding: Binding) -> bool:
        """Is this worker the one that pings ``binding``?"""
        if (binding.transport or "udp") != "udp":
            return binding.worker == self.index
        return _hash(binding) % self.workers == self.index

    def refresh(self, bindings: Iterable[Binding], now: float) -> None:
        """The live NATed bindings (everyone's), all at once: one whole pass."""
        self.begin_pass()
        self.add(bindings, now)
        self.end_pass()

    def begin_pass(self) -> None:
        """A new reading of the location store starts (it may come in pages)."""
        self._seen = set()

    def add(self, bindings: Iterable[Binding], now: float) -> None:
        """Some of the live NATed bindings: keep this worker's.  A binding
        registered again since we knew it starts a new life (its phone is alive)."""
        for binding in bindings:
            if not self.mine(binding):
                continue
            key = (binding.aor, binding.contact)
            self._seen.add(key)
            entry = self.entries.get(key)
            if entry is None:
                phase = (_hash(binding) / 2**32) * self.interval
                entry = self.entries[key] = _Entry(binding, now + phase)
                self._schedule(key, entry)
            elif binding.registered_at != entry.binding.registered_at:
                entry.binding = binding
                entry.failures = 0
                entry.streak_since = None

    def end_pass(self) -> None:
        """The reading is complete: forget the bindings it did not contain."""
        for key in [k for k in self.entries if k not in self._seen]:
            entry = self.entries.pop(key)
            if entry.in_flight:
                self.in_flight -= 1
        self._seen = set()

    def due(self, now: float) -> list[Ping]:
        """The pings to send now (each binding once per interval, none twice at a
        time).  Costs what is due, not what is known: a heap by next time."""
        pings: list[Ping] = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            if self.in_flight >= self.max_in_flight and self.method == "OPTIONS":
                break                          # the rest wait for a later tick: bounded cost
            item = heapq.heappop(queue)
            entry = self.entries.get(item[2])
            if entry is None or entry.next_at != item[0]:
                continue                       # forgotten, or rescheduled since
            if entry.in_flight:
                # the last ping is unanswered a whole interval later: it failed
                drop = self.failed(entry.binding, entry.sent_at, entry.pings)
                if drop is not None:
                    self.drops.append(drop)
                    continue
            binding = entry.binding
            udp = (binding.transport or "udp") == "udp"
            entry.pings += 1
            if udp and self.method == "OPTIONS":
                entry.in_flight, entry.sent_at = True, now
                self.in_flight += 1
                pings.append(Ping(binding, "options", True, entry.pings))
            else:
                pings.append(Ping(binding, "crlf", not udp, entry.pings))
            # a late tick does not make the next ping early: stay on the phase
            while entry.next_at <= now:
                entry.next_at += self.interval
            self._schedule(item[2], entry)
        return pings

    def _schedule(self, key: Key, entry: _Entry) -> None:
        heapq.heappush(self._queue, (entry.next_at, next(self._seq), key))

    def answered(self, binding: Binding, number: int | None = None) -> None:
        """A reply (any status, even to an older ping) or a CRLF written on a live
        connection: alive."""
        entry = self._settle(binding, number)
        if entry is not None:
            entry.failures = 0
            entry.streak_since = None

    def failed(self, binding: Binding, sent_at: float, number: int | None = None) -> Drop | None:
        """No reply (or no connection left): one more failure; a Drop once there are
        enough.  ``number``: the ping's; an older ping's timeout was counted already."""
        entry = self._settle(binding, number)
        if entry is None or (number is not None and number != entry.pings):
            return None
        entry.failures += 1
        if entry.streak_since is None:
            entry.streak_since = sent_at
        if entry.failures < self.failures:
            return None
        del self.entries[(binding.aor, binding.contact)]
        return Drop(entry.binding, entry.failures, entry.streak_since)

    def _settle(self, binding: Binding, number: int | None = None) -> _Entry | None:
        entry = self.entries.get((binding.aor, binding.contact))
        if entry is None:
            return None                        # forgotten (unregistered, expired, dropped)
        if entry.in_flight and (number is None or number == entry.pings):
            entry.in_flight = False
            self.in_flight -= 1
        if entry.binding.registered_at != binding.registered_at:
            return None                        # registered again meanwhile: that proves more
        return entry


class NatKeepalive:
    """Runs a NatPinger against the location store and the core's ports.

    The store is read a page per tick (``PAGE`` rows, ~15 ms), never all at
    once: a worker with tens of thousands of NATed bindings must not stall its
    event loop.  A new pass starts every interval (or when the last ended)."""

    PAGE = 500

    def __init__(self, core: "Core", location: LocationStore, pinger: NatPinger):
        self.core = core
        self.location = location
        self.pinger = pinger
        self.pass_started: float | None = None
        self.cursor: tuple[str, str] | None = None
        self.reading = False
        self.sent = 0
        self.dropped = 0

    def tick(self, now: float | None = None) -> None:
        """Call often: every 100 ms (at most ``max_in_flight`` pings leave per tick,
        so a worker sends up to ~2,000 pings/s)."""
        now = clock.time() if now is None else now
        if not self.reading and (self.pass_started is None
                                 or now - self.pass_started >= min(self.pinger.interval, 60.0)):
            self.pinger.begin_pass()
            self.pass_started, self.cursor, self.reading = now, None, True
        if self.reading:
            try:
                page = self.location.nated(now, after=self.cursor, limit=self.PAGE)
            except LocationError as exc:
                log.warning("NAT keep-alive: %s", exc)
                return
            self.pinger.add([b for b in page if self._ours(b)], now)
            if len(page) < self.PAGE:
                self.pinger.end_pass()
                self.reading = False
            else:
                self.cursor = (page[-1].aor, page[-1].contact)
        for ping in self.pinger.due(now):
            self._send(ping, now)
        while self.pinger.drops:
            self._drop(self.pinger.drops.pop())

    def _ours(self, binding: Binding) -> bool:
        """Several instances on one store (docs/scale-out.md): only the instance
        holding the pinhole can ping it; another's pings would leave from the
        wrong address, go unanswered, and drop a live phone."""
        return binding.instance is None or self.core.node.is_me_route(binding.instance)

    def _send(self, ping: Ping, now: float) -> None:
        binding = ping.binding
        received = received_target(binding.received)
        target = pinhole(self.core.effects, received, binding.worker) if received is not None else None
        self.sent += 1
        if target is None:                     # TCP connection gone: nothing to write to
            self._failed(binding, now)
        elif ping.kind == "crlf":
            written = self.core.effects.send(CRLF_PING, target)
            if not ping.expects_reply:
                return
            if written:
                self.pinger.answered(binding)
            else:
                self._failed(binding, now)
        else:
            send_options(self.core, binding.contact,
                         lambda status: self._result(binding, now, ping.number, status),
                         destination=target, call_id=self._owned_call_id())

    def _owned_call_id(self) -> str:
        """A fresh Call-ID whose owner is this worker (``workers`` tries on average)."""
        pinger, host = self.pinger, self.core.node.host
        while True:
            call_id = f"nat-{new_tag()}{new_tag()}@{host}"
            if call_owner(call_id.encode(), pinger.workers) == pinger.index:
                return call_id

    def _result(self, binding: Binding, sent_at: float, number: int, status: int | None) -> None:
        if status is not None:
            self.pinger.answered(binding, number)
        else:
            self._failed(binding, sent_at, number)

    def _failed(self, binding: Binding, sent_at: float, number: int | None = None) -> None:
        drop = self.pinger.failed(binding, sent_at, number)
        if drop is not None:
            self._drop(drop)

    def _drop(self, drop: Drop) -> None:
        binding = drop.binding
        try:
            gone = self.location.drop(binding.aor, binding.contact, registered_before=drop.since)
        except LocationError as exc:
            log.warning("NAT keep-alive: binding %s not dropped: %s", binding.contact, exc)
            return
        if not gone:
            return                             # registered again meanwhile: alive after all
        self.dropped += 1
        log.info("binding %s of %s dropped after %d unanswered keep-alives",
                 binding.contact, binding.aor, drop.failures)
        events = self.core.events
        self.core.emit(ev.BindingDropped(
            id=ev.new_event_id(), ts_ms=clock.now_ms(), call_id=binding.call_id, from_tag="",
            proxy=events.proxy, worker=events.worker, aor=binding.aor, contact=binding.contact,
            received=binding.received, reason="keepalive_timeout", failures=drop.failures))
