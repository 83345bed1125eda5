"""A Kafka topic → ClickHouse sink: the batching, commit and retry loop every
table fed from a topic shares (CDR legs from ``cdr.records``, ledger events
from ``ledger.events``).  What differs — the record type, the rule that
rejects a record, the insert — is passed in.

Batched: rows are inserted when ``batch_rows`` are buffered or the oldest
buffered row has waited ``batch_ms``, whichever comes first.  At-least-once:
offsets are committed only after the insert that holds their rows succeeded
(a failed insert is retried, with backoff, until it succeeds or the sink is
stopped — then the rows are simply read again by whoever consumes next).
Duplicates are harmless: every table fed this way is a ReplacingMergeTree on
the record's identity and every query deduplicates.

Records that can never be stored (not JSON, not the record type, a value outside its
column's range) are logged, counted in ``stats.rejected`` and skipped: one bad
record must not stop the pipeline.

A fresh embedded broker (memory only, offsets back at 0) must not be read
from the positions the consumer had in the old one: that would skip the new
broker's first records.  With ``epoch`` (proxy/infra/epoch.py) the sink
compares the broker incarnation after every fetch and before every commit;
on a change it inserts what it holds (real records, harmless twice), commits
nothing and starts a new consumer, which joins the new broker's group with no
committed offsets and reads from the earliest.

The sink runs in an asyncio loop next to the API in the embedded topology
(chdb allows one process per path, see docs/architecture.md); inserts run in a
worker thread so the loop keeps serving requests meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from ..config import KafkaSettings
from ..kafka import consumer_kwargs, ensure_topics
from .backend import BackendError

log = logging.getLogger("sipledger.sink")

R = TypeVar("R")

RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0


@dataclass
class SinkStats:
    received: int = 0           # records read from the topic
    inserted: int = 0           # rows inserted (duplicates included)
    rejected: int = 0           # records skipped as unstorable
    batches: int = 0
    insert_errors: int = 0
    commits: int = 0
    last_insert_s: float = 0.0  # duration of the last insert
    max_insert_s: float = 0.0   # ... and of the slowest
    assigned: set[TopicPartition] = field(default_factory=set)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: "TopicSink") -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked) -> None:
        # what we buffered from these partitions goes in (and is committed)
        # before another consumer starts from our last commit
        if revoked:
            await self.sink.flush()
        self.sink.stats.assigned.difference_update(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        self.sink.stats.assigned.update(assigned)
        self.sink.assigned.set()


def _cancelled_from_outside() -> bool:
    """Whether this task was asked to stop, as opposed to a CancelledError leaking
    out of the Kafka client (aiokafka's consumer lets its own internal
    cancellations escape while its broker restarts): the former ends the sink,
    the latter is one more consumer failure."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def _settle(task: asyncio.Task, topic: str) -> None:
    """Wait for the loop's insert in flight as the loop ends (its commit follows
    it); asked to stop from outside, stop it too."""
    try:
        await task
    except asyncio.CancelledError:
        if _cancelled_from_outside():
            task.cancel()
            raise
    except Exception as exc:    # already raised by the loop, or raised while it ended
        log.warning("sink %s: insert in flight: %r", topic, exc)


class EpochChanged(Exception):
    """The broker restarted under the consumer (``epoch`` changed)."""


class TopicSink(Generic[R]):
    """``record_type`` JSON records of ``topic`` → ``insert(rows)`` (returns rows stored);
    ``problem(record)`` names why a record can never be stored, else None.

    ``topics`` (name → partitions) reads several topics instead of one;
    subclasses may override ``decode_record`` (the topic decides the type);
    ``consumer_options``: aiokafka consumer settings over ``consumer_kwargs``."""

    def __init__(self, record_type: type[R], insert: Callable[[list[R]], int], kafka: KafkaSettings, *,
                 topic: str, group_id: str, problem: Callable[[R], str | None] = lambda _r: None,
                 batch_rows: int = 5000, batch_ms: int = 200,
                 partitions: int | None = None, create_topic: bool = True,
                 on_insert: Callable[[list[R]], None] | None = None,
                 topics: dict[str, int] | None = None, epoch: Callable[[], str] | None = None,
                 client_id: str = "sipledger-cdr-sink", consumer_options: dict | None = None) -> None:
        self.record_type = record_type
        self.insert = insert
        self.problem = problem
        self.kafka = kafka
        self.topic = topic
        self.group_id = group_id
        self.batch_rows = max(1, batch_rows)
        self.batch_s = max(1, batch_ms) / 1000
        self.partitions = partitions or kafka.partitions
        self.topics = dict(topics) if topics else {topic: self.partitions}
        self.epoch = epoch or (lambda: "")
        self.client_id = client_id
        self.consumer_options = dict(consumer_options or {})    # aiokafka settings on top of the defaults
        self._epoch = ""                                 # the incarnation the consumer started on
        self.create_topic = create_topic
        self.on_insert = on_insert
        self.stats = SinkStats()
        self.assigned = asyncio.Event()      # set once partitions are assigned
        self._decoder = msgspec.json.Decoder(record_type)
        self._buffer: list[R] = []
        self._offsets: dict[TopicPartition, int] = {}   # next offset to commit, per partition
        self._oldest: float | None = None                # monotonic time of the oldest buffered row
        self._consumer: AIOKafkaConsumer | None = None
        self._flush_lock = asyncio.Lock()
        self._stopping = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------
    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        """The running consumer (None between restarts): for its lag metric."""
        return self._consumer

    def stop(self) -> None:
        """Ask ``run`` to finish: it flushes what it holds, commits and returns."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until ``stop()``; retries the broker connection while it is down."""
        delay = RETRY_MIN_S
        while not self._stopping.is_set():
            try:
                try:
                    await self._start()
                except asyncio.CancelledError:
                    if _cancelled_from_outside():
                        raise
                    raise RuntimeError("consumer start cancelled inside the Kafka client") from None
            except Exception as exc:   # broker down or not reachable yet
                log.warning("sink %s: cannot start consumer on %s: %s (retrying)", self.topic,
                            self.kafka.bootstrap_servers, exc)
                await self._close_consumer()
                if await self._sleep(delay):
                    break
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            try:
                await self._consume()
                delay = RETRY_MIN_S
            except EpochChanged:
                log.warning("sink %s: the broker restarted; reading its topics from the start",
                            self.topic)
                self._offsets.clear()   # positions of the old broker: never commit them
                delay = RETRY_MIN_S
            except Exception as exc:    # e.g. the topic vanished with a broker restart
                log.error("sink %s: consumer failed: %r (restarting it)", self.topic, exc)
            except asyncio.CancelledError:
                if _cancelled_from_outside():
                    raise
                log.error("sink %s: cancelled inside the Kafka client (restarting the consumer)", self.topic)
            finally:
                try:
                    await self.flush()
                except Exception as exc:
                    log.warning("sink %s: final flush: %r", self.topic, exc)
                await self._close_consumer()
            if not self._stopping.is_set():
                if await self._sleep(delay):
                    break
                delay = min(delay * 2, RETRY_MAX_S)

    async def _start(self) -> None:
        self._epoch = self.epoch()      # before anything of this broker is read
        if self.create_topic:
            await ensure_topics(self.kafka, self.topics)
        self._consumer = AIOKafkaConsumer(**consumer_kwargs(
            self.kafka, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id=self.client_id, **self.consumer_options))
        self._consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        await self._consumer.start()

    async def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._buffer.clear()
        self._offsets.clear()
        self._oldest = None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:
                log.warning("sink %s: stopping consumer: %s", self.topic, exc)
            except asyncio.CancelledError:
                if _cancelled_from_outside():
                    raise
                log.warning("sink %s: stopping consumer: cancelled inside the Kafka client", self.topic)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when stopped."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    # -- the loop ------------------------------------------------------------------
    async def _consume(self) -> None:
        """Fetch, buffer, and insert what is due.  One insert at a time, run as
        a task while the loop keeps fetching: records that arrive during an
        insert are stamped when they arrive, and the next batch (everything
        that came meanwhile) goes in as soon as the previous insert is done if
        it is already due.  Under load batches grow with the insert time
        instead of each record waiting out an insert *and* a window."""
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        inflight: asyncio.Task | None = None
        try:
            while not self._stopping.is_set():
                if inflight is not None and inflight.done():
                    done: asyncio.Task = inflight
                    inflight = None
                    done.result()       # an insert that raised ends this consumer, as inline
                if self._due(loop.time()):
                    if inflight is None:
                        inflight = asyncio.create_task(self.flush())
                        await asyncio.sleep(0)      # it takes the buffer (and the lock) before we fetch on
                    else:
                        await asyncio.wait({inflight})
                    continue
                if self._oldest is None:
                    wait_s = self.batch_s
                else:
                    wait_s = max(0.0, self._oldest + self.batch_s - loop.time())
                batch = await consumer.getmany(timeout_ms=int(wait_s * 1000),
                                               max_records=max(1, self.batch_rows - len(self._buffer)))
                now = loop.time()
                for tp, records in batch.items():
                    self._take_all(tp, records, now)
                if self.epoch() != self._epoch:
                    await self._insert_uncommitted()    # after the insert in flight (the lock)
                    raise EpochChanged()
        finally:
            if inflight is not None:
                await _settle(inflight, self.topic)

    def _due(self, now: float) -> bool:
        """Whether the buffer should be inserted: ``batch_rows`` held or the
        oldest held ``batch_ms``; or only rejected records, to commit past them."""
        if self._buffer:
            return len(self._buffer) >= self.batch_rows or (
                self._oldest is not None and now >= self._oldest + self.batch_s)
        return bool(self._offsets)

    async def _insert_uncommitted(self) -> None:
        """The broker changed: store what is buffered, forget its offsets."""
        async with self._flush_lock:
            rows, self._buffer, self._offsets, self._oldest = self._buffer, [], {}, None
            if rows:
                await self._insert(rows)

    def decode_record(self, tp: TopicPartition, value: bytes) -> R:
        """One record's value as ``R`` (raises msgspec errors)."""
        return self._decoder.decode(value)

    def committed(self, offsets: dict[TopicPartition, int], epoch: str) -> None:
        """Called after each successful commit (next offsets, the broker's epoch)."""

    def _take_all(self, tp: TopicPartition, records: list, now: float) -> None:
        """One fetch's records of ``tp`` (in offset order) into the buffer: the
        per-record work (a sip.events fetch holds thousands) kept to decode,
        check, append; the counters and the offset once per fetch."""
        if not records:
            return
        decode, problem, buffer = self.decode_record, self.problem, self._buffer
        held = len(buffer)
        for record in records:
            try:
                row = decode(tp, record.value or b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._reject(tp, record.offset, f"not a {self.record_type.__name__}: {exc}")
                continue
            if (why := problem(row)) is not None:
                self._reject(tp, record.offset, why)
                continue
            buffer.append(row)
        self.stats.received += len(records)
        self._offsets[tp] = records[-1].offset + 1
        if self._oldest is None and len(buffer) > held:
            self._oldest = now

    def _reject(self, tp: TopicPartition, offset: int, why: str) -> None:
        self.stats.rejected += 1
        log.error("sink %s: skipping %s[%d]@%d: %s", self.topic, tp.topic, tp.partition, offset, why)

    async def flush(self) -> None:
        """Insert the buffered rows (retrying until it works or the sink stops),
        then commit the offsets they came from."""
        async with self._flush_lock:
            consumer = self._consumer
            rows, offsets = self._buffer, self._offsets
            if not rows and not offsets:
                return
            # take them: records fetched meanwhile start the next batch
            self._buffer, self._offsets, self._oldest = [], {}, None
            if rows and not await self._insert(rows):
                return      # stopped while the back end was failing: nothing committed
            if consumer is None or not offsets:
                return
            if self.epoch() != self._epoch:
                return      # offsets of the old broker: committing them in the new one skips records
            try:
                await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
                self.stats.commits += 1
                self.committed(offsets, self._epoch)
            except Exception as exc:
                # e.g. a rebalance took the partitions: the rows are stored, the
                # next owner reads them again (idempotent)
                log.warning("sink %s: commit failed (%s); rows will be read again", self.topic, exc)

    async def _insert(self, rows: list[R]) -> bool:
        delay = RETRY_MIN_S
        while True:
            started = time.perf_counter()
            try:
                count = await asyncio.to_thread(self.insert, rows)
            except BackendError as exc:
                self.stats.insert_errors += 1
                log.error("sink %s: insert of %d rows failed: %s (retrying in %.1fs)", self.topic,
                          len(rows), exc, delay)
                if await self._sleep(delay):
                    return False
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            self.stats.last_insert_s = time.perf_counter() - started
            self.stats.max_insert_s = max(self.stats.max_insert_s, self.stats.last_insert_s)
            self.stats.inserted += count
            self.stats.batches += 1
            if self.on_insert is not None:
                self.on_insert(rows)
            return True
