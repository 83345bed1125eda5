"""The worker's front door: pike and the load shedder, before any parsing.

Every datagram (and every framed TCP message) passes ``admit`` first.  SIP
responses ("SIP/2.0 " — the only bytes looked at) are never rate limited, so
a flood cannot starve the answers to our own requests.  Requests go through

1. the pike (proxy/core/pike.py): a source over its request density is blocked;
   its requests are dropped (default: a 503 to a spoofed source would be a
   reflection) or answered 503 with the remaining block time as Retry-After;
2. the load shedder (proxy/core/shedder.py): while this worker's event loop is
   behind, new requests get 503 + Retry-After (or are dropped); responses,
   ACK, CANCEL and in-dialog requests still pass.

What "behind" means: the delay a request sees before the worker handles it.
Two parts, measured every ``overload.sample_ms``; the larger is fed to the shedder:

- event-loop lag: how late a timer fires.  Everything a worker does runs on
  its one loop, so this is a delay every message sees (slow routing, a burst
  of calls, a stuck store).  When the loop is so busy that the timer itself is
  overdue, ``admit`` sees that at once.
- UDP queueing delay: a datagram flood does not delay timers — the loop reads
  a datagram per turn and stays punctual — while the datagrams wait in the
  kernel's receive queue.  So each tick the worker sends itself a probe
  datagram (a node-wide key and the send time) on every socket it reads; the
  time the probe spent in the queue is the delay every datagram ahead of it
  saw.  Probes are read by whichever worker reads the shared socket: the key
  is common to the node, the clock (CLOCK_MONOTONIC) too.  A lost probe says
  nothing (the queue overflowed — shedding cannot help with what the kernel
  drops) and a measure older than a second is forgotten.

Not chosen: how full the receive queue is (tried: a queue full of pike-blocked
junk drains in ~100 ms, yet looked "full" and shed real calls), and
transaction counts (they say nothing about cost or delay).

The blocked sources are written to DATA_DIR/run/pike-worker-<i>.json every
``pike.publish_seconds`` (atomically, at most ``MAX_LISTED`` sources) for
`sipledger pike`.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..core.pike import Pike, Verdict
from ..core.ports import Target
from ..core.shedder import AnswerBudget, LoadShedder
from ..infra.config import Config
from ..infra.runfiles import write_json_atomically
from ..sip.reject import refusal
from .throttle import ThrottledLog

__all__ = ["FloodGuard", "address_matcher", "read_pike_states", "pike_state_path"]

log = logging.getLogger("sipledger.flood")

MAX_LISTED = 100
PROBE_MAGIC = b"\x00sipledger-probe\x00"          # a NUL first: never a SIP message
PROBE_KEY_BYTES = 16
PROBE_FRESH_SECONDS = 1.0


def probe_key(secret: bytes) -> bytes:
    """The node-wide key of the queue probes (from the node's nonce secret)."""
    return hashlib.sha256(b"sipledger overload probe\x00" + secret).digest()[:PROBE_KEY_BYTES]
PREFIX = "pike-worker-"

Send = Callable[[bytes, Target], bool]


def address_matcher(cidrs: Iterable[str]) -> Callable[[str], bool]:
    """ip -> whether it is inside one of ``cidrs`` (an unparsable address is not)."""
    networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def matches(ip: str) -> bool:
        if not networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in networks)
    return matches


def pike_state_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"{PREFIX}{index}.json"


def read_pike_states(run_dir: Path) -> list[dict]:
    """Every worker's published pike state under ``run_dir``, by worker index."""
    states = []
    for path in sorted(Path(run_dir).glob(f"{PREFIX}*.json")):
        try:
            states.append(json.loads(path.read_text()))
        except (OSError, ValueError):          # being replaced right now
            continue
    return sorted(states, key=lambda s: s.get("worker", 0))


class FloodGuard:
    def __init__(self, config: Config, run_dir: Path, index: int, key: bytes | None = None) -> None:
        self.config = config
        self.path = pike_state_path(run_dir, index)
        self.index = index
        pk, ov = config.pike, config.overload
        self.trusted = address_matcher(config.proxy.trusted_sources)
        self.pike = (Pike(pk.sampling_seconds, pk.density, pk.block_seconds, pk.max_sources, self.trusted)
                     if pk.enabled else None)
        self.shedder = (LoadShedder(ov.max_delay_ms / 1000, ov.resume_delay_ms / 1000, ov.min_busy_percent / 100)
                        if ov.enabled else None)
        self.answers = AnswerBudget(ov.max_answers_per_second)   # 503s of both, per second
        self.key = key if key is not None else os.urandom(PROBE_KEY_BYTES)
        self.probe_targets: list[tuple] = []       # local addresses of the UDP sockets read
        self._probe_sock: socket.socket | None = None
        self._lag = 0.0                            # the last event-loop lag measured
        self._queue_delay = 0.0                    # the last probe's time in a receive queue ...
        self._queue_seen = float("-inf")           # ... read at this loop time
        self._work = 0.0                           # seconds spent handling admitted messages ...
        self._work_since = 0.0                     # ... since this loop time
        self.probes_sent = 0
        self.probes_seen = 0
        self.refused = 0                           # 503s sent (stateless: metrics count them as sl 503)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.send: Send | None = None
        self._due = float("inf")               # when the lag timer should fire next
        self._sample_handle: asyncio.TimerHandle | None = None
        self._publish_handle: asyncio.TimerHandle | None = None
        self._last_state: dict | None = None
        self._log = ThrottledLog(log)

    def watch(self, *socks: socket.socket) -> None:
        """Measure the queueing delay of these UDP sockets (the worker's public and own ports)."""
        for sock in socks:
            self.probe_targets.append(sock.getsockname())

    def start(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        self.loop = loop
        self.send = send
        if self.shedder is not None:
            if self.probe_targets:
                host = self.probe_targets[0][0]
                self._probe_sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                                 socket.SOCK_DGRAM)
                self._probe_sock.setblocking(False)
                self._probe_sock.bind((host, 0))
            self._work_since = loop.time()
            self._schedule_sample()
        self._publish()

    def close(self) -> None:
        for handle in (self._sample_handle, self._publish_handle):
            if handle is not None:
                handle.cancel()
        if self._probe_sock is not None:
            self._probe_sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    # -- the hot path ------------------------------------------------------------
    def admit(self, data: bytes, source: Target) -> bool:
        """Whether ``data`` from ``source`` goes on to the core; a refused
        request has been dropped or answered here."""
        if data.startswith(b"SIP/2.0 ") or self.loop is None:
            return True
        now = self.loop.time()
        if data.startswith(PROBE_MAGIC):
            self._probe_received(data, now)
            return False
        pike = self.pike
        if pike is not None:
            verdict = pike.check(source.host, now)
            if verdict is not Verdict.ADMIT:
                if verdict is Verdict.NEWLY_BLOCKED:
                    self._log(logging.WARNING, "pike: blocking %s for %.0f s (more than %d requests in %.1f s)",
                              source.host, pike.block_seconds, pike.density, pike.window)
                if self.config.pike.policy == "503":
                    self._refuse(data, source, int(pike.block_seconds), now)
                return False
        shedder = self.shedder
        if shedder is not None:
            if now - self._due > shedder.max_delay:      # the lag timer itself is overdue
                self._lag = now - self._due
                self._observe(now)
            if not shedder.admit(data):
                if self.config.overload.policy == "503":
                    self._refuse(data, source, self.config.overload.retry_after_seconds, now)
                return False
        return True

    def timed(self, handle: Callable[[bytes, Target], None], data: bytes, source: Target) -> None:
        """``handle(data, source)``, its duration counted as work (the shedder's busy share)."""
        started = time.perf_counter()
        try:
            handle(data, source)
        finally:
            self._work += time.perf_counter() - started

    def _refuse(self, data: bytes, source: Target, retry_after: int, now: float) -> None:
        if not self.answers.allow(now):
            return
        answer = refusal(data, 503, None, [("Retry-After", str(retry_after))])
        if answer is not None and self.send is not None:
            self.send(answer, source)           # to the source address, never a Via host
            self.refused += 1

    # -- timers ------------------------------------------------------------------
    def _schedule_sample(self) -> None:
        assert self.loop is not None
        interval = self.config.overload.sample_ms / 1000
        self._due = self.loop.time() + interval
        self._sample_handle = self.loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        self._lag = max(0.0, now - self._due)
        self._send_probes()
        self._observe(now)
        self._work, self._work_since = 0.0, now
        self._schedule_sample()

    def _send_probes(self) -> None:
        if self._probe_sock is None:
            return
        probe = PROBE_MAGIC + self.key + struct.pack("!d", time.monotonic())
        for target in self.probe_targets:
            try:
                self._probe_sock.sendto(probe, target)
                self.probes_sent += 1
            except OSError:                     # a full buffer: this tick goes unmeasured
                pass

    def _probe_received(self, data: bytes, now: float) -> None:
        start = len(PROBE_MAGIC)
        key, stamp = data[start:start + PROBE_KEY_BYTES], data[start + PROBE_KEY_BYTES:]
        if len(stamp) != 8 or not hmac.compare_digest(key, self.key) or self.shedder is None:
            return                               # not ours: ignored like any junk
        self.probes_seen += 1
        self._queue_delay = max(0.0, time.monotonic() - struct.unpack("!d", stamp)[0])
        self._queue_seen = now
        if self._queue_delay > self.shedder.max_delay:
            self._observe(now)

    def _observe(self, now: float) -> None:
        shedder = self.shedder
        assert shedder is not None
        fresh = now - self._queue_seen < PROBE_FRESH_SECONDS
        queue_delay = self._queue_delay if fresh else 0.0
        busy = min(1.0, self._work / (now - self._work_since)) if now > self._work_since else 0.0
        if shedder.observe(self._lag, queue_delay, busy):
            if shedder.shedding:
                self._log(logging.WARNING, "overload: requests wait %.0f ms (event loop %.0f ms, UDP queue %.0f ms), "
                          "%.0f%% busy with them; refusing new requests", shedder.delay * 1000, self._lag * 1000,
                          queue_delay * 1000, busy * 100)
            else:
                self._log(logging.INFO, "overload over: accepting new requests again")

    def _publish(self) -> None:
        assert self.loop is not None
        try:
            self.write_state()
        except Exception:                        # informational: never stop the worker for it
            log.exception("cannot publish the pike state")
        self._publish_handle = self.loop.call_later(self.config.pike.publish_seconds, self._publish)

    def state(self) -> dict:
        assert self.loop is not None
        now = self.loop.time()
        blocked = self.pike.blocked(now) if self.pike is not None else []
        return {"worker": self.index, "pid": os.getpid(),
                "blocked": [{"source": ip, "seconds_left": round(left, 1), "requests_refused": n}
                            for ip, left, n in blocked[:MAX_LISTED]],
                "blocked_count": len(blocked),
                "pike": self.pike.counters() if self.pike is not None else None,
                "overload": (self.shedder.counters() | {"probes_sent": self.probes_sent,
                                                         "probes_seen": self.probes_seen}
                             if self.shedder is not None else None),
                "unanswered_refusals": self.answers.dropped}

    def write_state(self) -> bool:
        state = self.state()
        if state == self._last_state:
            return False
        try:
            write_json_atomically(self.path, state)
        except OSError as exc:
            self._log(logging.WARNING, "cannot write %s: %s", self.path, exc)
            return False
        self._last_state = state
        return True
