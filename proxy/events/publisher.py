"""Moves the outbox's rows to Kafka, forever, without ever failing the proxy.

Delivery: a row is deleted from the outbox only after the broker acknowledged
the batch holding it, so no event is lost while the broker is down, restarting
or missing its topic; the publisher backs off (0.2 s doubling to 2 s), builds a
new producer and tries again.  Normally each event reaches Kafka once.  It can
arrive twice when the broker stored a batch but the acknowledgement was lost,
or the process died between the broker's ack and the outbox delete (one batch
at most).  That is at-least-once: consumers dedupe on the event ``id``.

With ``retention`` (the embedded, memory-only broker; docs/operations.md) an
acknowledged row is not deleted but kept, with its partition, offset and the
broker's epoch, until the archiver's committed position is past it; a new
broker epoch makes every kept row pending again.  So an event survives a
broker restart whether or not anyone had consumed it.

Order: a Call-ID's events go to one partition, in outbox order, one batch in
flight per partition.  After a partial failure the rows that failed are sent
again after rows that succeeded, so a retry can reorder a call's events:
consumers order a call by ``ts_ms``, not by offset.

Records are grouped into per-partition batches here (aiokafka's batch API)
rather than sent one by one: it costs the proxy's event loop about a third
of the CPU per event.  Keys are placed with aiokafka's default partitioner
(Kafka's murmur2), as any other producer of the topic would.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from proxy.infra.config import KafkaSettings
from proxy.infra.kafka import producer_kwargs

from .outbox import Outbox
from .retention import ArchiveRetention

log = logging.getLogger(__name__)

# Far above any event; one bigger than a broker accepts would block the outbox.
MAX_RECORD_BYTES = 900_000
# Broker outages are seen within this; aiokafka retries inside it on its own.
REQUEST_TIMEOUT_MS = 5000
# Checks the outbox even when nobody calls wake() (rows left by a previous run).
IDLE_POLL_S = 1.0
# How often kept rows are checked against the archive and the broker epoch.
RETENTION_CHECK_S = 0.5


class _KeyPartitions:
    """Kafka's key → partition (murmur2), remembered: aiokafka's is pure Python
    (~6 µs a key) and a call's events share their key."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._hash = DefaultPartitioner()
        self._partitions: list[int] = []
        self._known: dict[bytes, int] = {}

    def __call__(self, key: bytes, partitions: list[int]) -> int:
        if partitions != self._partitions or len(self._known) > self.MAX_KEYS:
            self._partitions, self._known = partitions, {}  # new topic layout, or forget old calls
        partition = self._known.get(key)
        if partition is None:
            partition = self._known[key] = self._hash(key, partitions, partitions)
        return partition


class EventPublisher:
    """``start()`` in the proxy's event loop; call ``wake()`` after each outbox flush."""

    def __init__(self, outbox: Outbox, kafka_settings: KafkaSettings, topic: str, *,
                 batch: int = 1000, backoff_initial: float = 0.2, backoff_max: float = 2.0,
                 request_timeout_ms: int = REQUEST_TIMEOUT_MS,
                 retention: ArchiveRetention | None = None, min_interval_s: float = 0.0) -> None:
        self.outbox = outbox
        # Delivery rounds start at most this often (unless a round filled ``batch``).
        # A round costs a fixed ~0.3 ms of the worker's CPU (two SQLite statements,
        # a produce request per broker, a batch and a future per partition, their
        # acknowledgement) however few rows it carries; waking on every outbox
        # flush (5 ms) made it ~10 rows a round at 1,000 calls/s, and the
        # publisher 10-15 % of a worker.  The wait adds at most this to an
        # event's delay; events stay durable in the outbox meanwhile.
        self.min_interval_s = min_interval_s
        self.retention = retention
        self.kafka_settings = kafka_settings
        self.topic = topic
        self.batch = batch
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.request_timeout_ms = request_timeout_ms
        # Counters for metrics: plain attributes, read them any time.
        self.published = 0          # rows acknowledged by the broker
        self.failed_attempts = 0    # delivery attempts that hit an error
        self.dropped = 0            # rows too big for any broker (logged)
        self.pending = outbox.count()
        self.last_error: str | None = None
        self.resent = 0             # kept rows sent again to a new broker incarnation
        self.archived = 0           # kept rows deleted once archived
        self.overflowed = 0         # kept rows deleted unarchived (beyond keep_rows)
        self._epoch_seen: str | None = None
        self._checked_at = -RETENTION_CHECK_S
        self._partition_of = _KeyPartitions()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task | None = None
        self._wakeup = asyncio.Event()
        self._draining = False

    def start(self) -> None:
        if self._task is None:
            self._draining = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-publisher")

    def wake(self) -> None:
        """New rows are in the outbox (flushed)."""
        self._wakeup.set()

    async def stop(self, drain_timeout: float = 5.0) -> int:
        """Flush the outbox, deliver what is pending for up to ``drain_timeout``
        seconds, then close.  Returns how many rows stay in the outbox (they are
        sent by the next run)."""
        task, self._task = self._task, None
        if task is not None:
            self.outbox.flush()
            self._draining = True
            self.wake()
            _, still_running = await asyncio.wait({task}, timeout=drain_timeout)
            if still_running:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_producer()
        self.pending = self.outbox.count()
        return self.pending

    async def _run(self) -> None:
        backoff = self.backoff_initial
        if self.retention is None and self.outbox.kept:
            # kept by a run that had an archive to wait for: deliver them as any pending row
            self.outbox.resend_other_epochs("")
        full = True             # the last round filled a batch: go on at once
        while True:
            try:
                if not full and not self._draining and self.min_interval_s > 0:
                    await asyncio.sleep(self.min_interval_s)
                self._wakeup.clear()  # before reading: a wake() from now on is not lost
                self._check_retention()
                rows = self.outbox.pending(self.batch)
                self.pending = self.outbox.count()
                if not rows:
                    full = True       # the next wake() delivers at once (a quiet proxy adds no delay)
                    if self._draining:
                        return
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), IDLE_POLL_S)
                    continue
                full = len(rows) >= self.batch
                await self._deliver(rows)
                if self.last_error is not None:
                    log.info("publishing to %s again after %s", self.topic, self.last_error)
                    self.last_error = None
                backoff = self.backoff_initial
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # anything: the proxy must keep running
                self.failed_attempts += 1
                if self.last_error is None:
                    log.warning("publishing to %s failed, retrying: %r", self.topic, exc)
                self.last_error = repr(exc)
                await self._close_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)

    def _check_retention(self) -> None:
        """Kept rows: pending again after a broker restart; deleted once archived."""
        retention = self.retention
        if retention is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._checked_at < RETENTION_CHECK_S:
            return
        self._checked_at = now
        epoch = retention.epoch()
        if epoch != self._epoch_seen:
            moved = self.outbox.resend_other_epochs(epoch)
            if moved:
                log.warning("broker epoch %s: %d published events not yet archived go out again",
                            epoch or "-", moved)
            self.resent += moved
            self._epoch_seen = epoch
        position = retention.archived()
        if position is not None and position[0] == epoch and epoch:
            self.archived += self.outbox.trim(epoch, position[1])
        dropped = self.outbox.drop_kept_beyond(retention.keep_rows)
        if dropped:
            self.overflowed += dropped
            log.warning("outbox keeps %d published events at most: %d not yet archived deleted "
                        "(is the archiver running?)", retention.keep_rows, dropped)

    async def _deliver(self, rows: list[tuple[int, bytes, bytes]]) -> None:
        """Send ``rows``, ack (or keep) those the broker took, raise the first error."""
        sendable = self._drop_oversized(rows)
        # the broker incarnation before sending: kept rows are stamped with it
        # only if it is still the same after the acknowledgement
        epoch = self.retention.epoch() if self.retention is not None else ""
        producer = await self._get_producer()
        sent: list[tuple[asyncio.Future, list[int]]] = []
        error: BaseException | None = None
        try:
            partitions = sorted(await producer.partitions_for(self.topic))
            await self._send_batches(producer, partitions, sendable, sent)
        except Exception as exc:
            error = exc  # batches already handed over may still be delivered
        results = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        delivered = [seq for (_, seqs), result in zip(sent, results)
                     if not isinstance(result, BaseException) for seq in seqs]
        if epoch:
            self._keep(sent, results, epoch)
        elif error is None and len(delivered) == len(sendable):
            self.outbox.ack(upto=rows[-1][0])  # one range delete
        else:
            self.outbox.ack(delivered)
        self.published += len(delivered)
        self.pending = self.outbox.count()
        error = error or next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            raise error

    def _keep(self, sent: list[tuple[asyncio.Future, list[int]]], results: list, epoch: str) -> None:
        """Delivered rows stay until archived, stamped with where the broker put
        them; if the broker changed meanwhile they simply stay pending."""
        assert self.retention is not None
        if self.retention.epoch() != epoch:
            return
        placed = [(seq, result.partition, result.offset + i)
                  for (_, seqs), result in zip(sent, results) if not isinstance(result, BaseException)
                  for i, seq in enumerate(seqs)]
        self.outbox.keep(placed, epoch)

    async def _send_batches(self, producer: AIOKafkaProducer, partitions: list[int],
                            rows: list[tuple[int, bytes, bytes]],
                            sent: list[tuple[asyncio.Future, list[int]]]) -> None:
        """Hand ``rows`` to the producer as per-partition batches, appending
        (delivery future, seqs in that batch) to ``sent`` as they go."""
        open_batches: dict[int, tuple] = {}
        for seq, key, value in rows:
            partition = self._partition_of(key, partitions)
            builder, seqs = open_batches.get(partition) or (producer.create_batch(), [])
            if builder.append(key=key, value=value, timestamp=None) is None:  # full
                sent.append((await producer.send_batch(builder, self.topic, partition=partition), seqs))
                builder, seqs = producer.create_batch(), []
                builder.append(key=key, value=value, timestamp=None)
            seqs.append(seq)
            open_batches[partition] = (builder, seqs)
        for partition, (builder, seqs) in open_batches.items():
            sent.append((await producer.send_batch(builder, self.topic, partition=partition), seqs))

    def _drop_oversized(self, rows: list[tuple[int, bytes, bytes]]) -> list[tuple[int, bytes, bytes]]:
        """Rows no broker would take would block the outbox forever: log and drop them."""
        too_big = [seq for seq, key, value in rows if len(key) + len(value) > MAX_RECORD_BYTES]
        if not too_big:
            return rows
        log.error("dropping %d outbox rows over %d bytes: seqs %s",
                  len(too_big), MAX_RECORD_BYTES, too_big[:10])
        self.outbox.ack(too_big)
        self.dropped += len(too_big)
        return [row for row in rows if len(row[1]) + len(row[2]) <= MAX_RECORD_BYTES]

    async def _get_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**producer_kwargs(
                self.kafka_settings, request_timeout_ms=self.request_timeout_ms))
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # stop() waits for batches still queued; they expire within the request timeout
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self.request_timeout_ms / 1000 + 1)
