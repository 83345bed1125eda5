"""SIP capture at the worker edge (docs/trace.md): the worker hands every
message it reads and every one it sends to ``TraceEdge.received`` / ``sent``
while ``tracer.on`` (all traffic, or a call flagged by ``ctx.trace()``).

A captured message goes (1) as HEP v3 to each ``[trace] hep`` collector, one
non-blocking ``sendto`` (a full socket buffer drops it, counted), and (2) into
a trace outbox of its own (DATA_DIR/outbox/worker-N-trace.sqlite), published
on ``[trace] topic`` like the call events, never waited for: one outbox row
and one Kafka record (a TraceBatch) per flush, up to BATCH_RECORDS captures.
Bounded: while ``max_pending_batches`` batches wait for Kafka, new captures
are dropped (counted).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from pathlib import Path

import msgspec

from ..core.ports import Target
from ..events.outbox import Outbox
from ..events.publisher import EventPublisher
from ..infra import clock
from ..infra.config import Config, hep_address
from ..trace import hep
from ..trace.capture import Address, Tracer, record

log = logging.getLogger("sipledger.trace")

BATCH_RECORDS = 64             # captures per Kafka record at most ...
BATCH_BYTES = 15_000           # ... and bytes: one record fits the producer's 16 KB batch
PUBLISH_ROWS = 64              # outbox rows (batches) per publisher round


class TraceStats:
    def __init__(self) -> None:
        self.captured = 0           # messages captured
        self.dropped = 0            # not stored: the outbox was behind (max_pending)
        self.hep_sent = 0           # HEP packets sent (all collectors)
        self.hep_dropped = 0        # HEP packets not sent (socket full, too large, error)


class TraceEdge:
    def __init__(self, config: Config, data_dir: Path, index: int, local: tuple[str, int]):
        self.settings = config.trace
        self.kafka = config.kafka
        self.node = config.node.name
        self.index = index
        self.data_dir = data_dir
        self.local_ip, self.local_port = local     # the proxy's side of every record
        self.flush_s = config.proxy.outbox_flush_ms / 1000
        self.stats = TraceStats()
        self.tracer = Tracer(enabled=self.settings.enabled, sample=self.settings.sample, emit=self._emit,
                             now=time.monotonic,
                             flag_seconds=self.settings.flag_seconds)
        self._ids = itertools.count(1)    # zero-padded in ids: they sort in capture order within a ms
        self._prefix = f"{self.node}-{index}-{os.getpid()}-{clock.now_ms()}-"
        self._encoder = msgspec.json.Encoder()
        self._collectors = [a for a in (hep_address(h) for h in self.settings.hep) if a is not None]
        self._hep_socks: dict[int, socket.socket] = {}
        self.outbox: Outbox | None = None
        self.publisher: EventPublisher | None = None
        self._flush_scheduled = False
        self._batch: list[bytes] = []              # encoded TraceRecords not yet in the outbox
        self._batch_bytes = 0
        self._key = f"{self.node}-{index}".encode()

    # -- the worker's hooks ------------------------------------------------------
    def received(self, data: bytes, source: Target) -> None:
        self.tracer.capture(data, "in", (source.transport, source.host, source.port),
                            (source.transport, self.local_ip, self.local_port))

    def sent(self, data: bytes, target: Target) -> None:
        self.tracer.capture(data, "out", (target.transport, self.local_ip, self.local_port),
                            (target.transport, target.host, target.port))

    def flag(self, data: bytes, source: Target) -> None:
        """ctx.trace(): this message's call from now on, this message included."""
        self.tracer.capture_flagged(data, (source.transport, source.host, source.port),
                                    (source.transport, self.local_ip, self.local_port))

    # -- output ------------------------------------------------------------------
    def _emit(self, data: bytes, direction: str, src: Address, dst: Address, call_id: str) -> None:
        self.stats.captured += 1
        ts_ms = clock.now_ms()
        if self._collectors:
            self._send_hep(data, src, dst, ts_ms, call_id)
        if self.settings.store:
            self._store(record(data, direction, src, dst, call_id=call_id, ts_ms=ts_ms,
                               rid=f"{self._prefix}{next(self._ids):012d}", node=self.node, worker=self.index))

    def _send_hep(self, data: bytes, src: Address, dst: Address, ts_ms: int, call_id: str) -> None:
        try:
            packet = hep.encode(data, src=(src[1], src[2]), dst=(dst[1], dst[2]), transport=src[0],
                                ts_us=ts_ms * 1000, capture_id=self.settings.hep_capture_id,
                                password=self.settings.hep_password, correlation_id=call_id)
        except ValueError:              # too large, mixed IP versions
            self.stats.hep_dropped += len(self._collectors)
            return
        for host, port in self._collectors:
            try:
                self._hep_socket(host).sendto(packet, (host, port))
                self.stats.hep_sent += 1
            except OSError:             # EAGAIN (buffer full), unreachable …: best effort
                self.stats.hep_dropped += 1

    def _hep_socket(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self._hep_socks.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._hep_socks[family] = sock
        return sock

    def _store(self, rec) -> None:
        if self.outbox is None:         # opened at the first capture: trace off costs nothing
            (self.data_dir / "outbox").mkdir(parents=True, exist_ok=True)
            self.outbox = Outbox(str(self.data_dir / "outbox" / f"worker-{self.index}-trace.sqlite"))
            self.publisher = EventPublisher(self.outbox, self.kafka, self.settings.topic, batch=PUBLISH_ROWS)
            self.publisher.start()
        if self.outbox.count() >= self.settings.max_pending_batches:
            self.stats.dropped += 1
            return
        encoded = self._encoder.encode(rec)
        self._batch.append(encoded)
        self._batch_bytes += len(encoded)
        if len(self._batch) >= BATCH_RECORDS or self._batch_bytes >= BATCH_BYTES:
            self._close_batch()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.flush_s, self._flush)

    def _close_batch(self) -> None:
        """The captures so far become one outbox row: a TraceBatch, written by hand
        (the records are encoded already)."""
        if self._batch and self.outbox is not None:
            self.outbox.append(self._key, b'{"records":[' + b",".join(self._batch) + b'],"v":1}')
            self._batch, self._batch_bytes = [], 0

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.outbox is None or self.publisher is None:
            return
        self._close_batch()
        try:
            self.outbox.flush()
        except Exception:
            log.exception("trace outbox flush failed; captures stay buffered")
            return
        self.publisher.wake()

    async def close(self) -> None:
        for sock in self._hep_socks.values():
            sock.close()
        if self.outbox is not None and self.publisher is not None:
            self._close_batch()
            self.outbox.flush()
            await self.publisher.stop(drain_timeout=2.0)
            self.outbox.close()
