"""faust's consumer, handing whole fetches of one topic to one coroutine.

faust (0.15) moves every record on its own through the worker loop: a
``wait_first`` per record (tasks and futures), the conductor's lock, the
topic's queue, a stream event, an ack.  For the CDR processor that
per-record machinery cost more CPU than the fold itself (py-spy,
docs/performance.md).  This consumer keeps everything else of faust —
the fetcher thread, read offsets and gaps, acks and commits, rebalances,
the changelog topics and their recovery — and changes two things:

* records of the ``handlers``' topics are collected per fetch and given to
  their handler as one list of aiokafka's records (at most ``chunk`` at a
  time: no faust ``Message`` per record, which with faust's per-record
  generator and ack was a fifth of the processor's CPU), then acked per
  partition; records of any other topic (a table's changelog while it
  recovers) take faust's own path, one by one;
* a commit first calls ``before_commit()`` with ``lock`` held, after the
  offsets to commit were chosen: the handler's effects on tables can then be
  written once per key and commit (``CdrProcessor.flush_changelog``) instead
  of once per record, and still precede the offsets they belong to (faust
  flushes its producer before it commits).

The agent registered on the topic stays: it subscribes the topic and enables
acks for it, and it is the fallback path when this consumer is not used.
"""
from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

Handler = Callable[[list], Awaitable[None]]


def batch_consumer_class(base: type, handlers: Mapping[str, Handler], *,
                         before_commit: Callable[[], Awaitable[None]],
                         lock: Callable[[], asyncio.Lock], chunk: int) -> type:
    """A subclass of faust's transport consumer ``base`` (see the module doc)."""
    from faust.transport.consumer import CONSUMER_FETCHING
    from faust.types.tuples import ack_lock
    from mode.utils.futures import notify

    class BatchConsumer(base):  # type: ignore[valid-type,misc]
        async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (faust's loop)
            # faust's Consumer._drain_messages and Consumer.getmany, minus the
            # per-record hand-off: a fetch's records of a handled topic go to
            # the handler as aiokafka's records (no faust Message per record)
            # and are acked per partition (``_ack_offsets``)
            callback = self.callback
            consumer_should_stop = self._stopped.is_set
            fetcher_should_stop = fetcher._stopped.is_set
            get_read_offset = self._read_offset.__getitem__
            set_read_offset = self._read_offset.__setitem__
            acks_enabled_for = self.app.topics.acks_enabled_for
            commit_every = self._commit_every
            try:
                while not (consumer_should_stop() or fetcher_should_stop()):
                    self.diag.set_flag(CONSUMER_FETCHING)
                    records, active = await self._wait_next_records(1.0)
                    await self.sleep(0)
                    if records is None or self.should_stop:
                        continue
                    if not self.flow_active:
                        # faust's getmany: the flow stopped (a rebalance), back
                        # to the committed offsets
                        try:
                            await self.perform_seek()
                        except Exception as exc:
                            self.log.warning(f"exception performing seek when flow not active {exc}")
                        continue
                    generation = self.app.consumer_generation_id
                    todo: dict[str, list[tuple[Any, list]]] = {}
                    for tp, fetched in records.items():
                        if not fetched or not (active is None or tp in active
                                               or tp in self._buffered_partitions):
                            continue
                        r_offset = get_read_offset(tp)
                        if tp.topic not in handlers:  # e.g. a changelog while it recovers: faust's path
                            for record in fetched:
                                if not self._still(generation):
                                    break
                                offset = record.offset
                                if r_offset is not None and offset < r_offset:
                                    continue
                                if r_offset and offset - r_offset > 1 and acks_enabled_for(tp.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                                await self.wait_first(callback(self._to_message(tp, record)),
                                                      self.suspend_flow.wait())
                                set_read_offset(tp, offset)
                                r_offset = offset
                            continue
                        if r_offset is not None and fetched[0].offset < r_offset:
                            fetched = [record for record in fetched if record.offset >= r_offset]
                        if r_offset and fetched and acks_enabled_for(tp.topic):
                            await self._add_gaps(tp, r_offset, fetched)
                        if fetched:
                            todo.setdefault(tp.topic, []).append((tp, fetched))
                    for topic, segments in todo.items():
                        handler = handlers[topic]
                        for part, pieces in _chunks(segments, chunk):
                            if not self._still(generation):
                                break
                            await handler(part)
                            for tp, piece in pieces:
                                self._ack_offsets(tp, [record.offset for record in piece])
                                set_read_offset(tp, piece[-1].offset)
                    if commit_every is not None and self._n_acked >= commit_every:  # type: ignore[has-type]
                        self._n_acked = 0
                        await self.commit()
                    self.diag.unset_flag(CONSUMER_FETCHING)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    return
                raise
            finally:
                self.diag.unset_flag(CONSUMER_FETCHING)

        def _still(self, generation: int) -> bool:
            """faust's getmany stops handing out a fetch's records once the flow
            stops or a rebalance changed the generation."""
            return bool(self.flow_active) and self.app.consumer_generation_id == generation

        async def _add_gaps(self, tp: Any, r_offset: int, fetched: list) -> None:
            """faust records a gap wherever offsets jump (compaction, transaction
            markers); contiguous offsets, the usual fetch, have none."""
            if fetched[0].offset == r_offset + 1 and fetched[-1].offset - fetched[0].offset == len(fetched) - 1:
                return
            previous = r_offset
            for record in fetched:
                if record.offset - previous > 1:
                    await self._add_gap(tp, previous + 1, record.offset)
                previous = record.offset

        def _ack_offsets(self, tp: Any, offsets: list[int]) -> None:
            """faust's Consumer.ack for records never wrapped in a Message (so
            never tracked as unacked): the same bookkeeping, once per list."""
            with ack_lock:
                if not self.app.topics.acks_enabled_for(tp.topic):
                    return
                committed = self._committed_offset[tp]
                acked_index = self._acked_index[tp]
                acked = self._acked[tp]
                n = 0
                for offset in offsets:
                    if (committed is None or offset >= committed) and offset not in acked_index:
                        acked_index.add(offset)
                        acked.append(offset)
                        n += 1
                self._n_acked += n
                notify(self._waiting_for_ack)

        async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
            # faust's Consumer._commit_tps with ``before_commit`` once the
            # offsets are chosen: nothing acked after that point is committed
            # now, and everything acked before has its effects written first
            async with lock():
                commit_offsets = self._filter_committable_offsets(tps)
                if commit_offsets:
                    await before_commit()
            if not commit_offsets:
                return False
            from faust.exceptions import ProducerSendError
            try:
                await self._handle_attached(commit_offsets)
            except ProducerSendError as exc:
                await self.crash(exc)
                return False
            return await self._commit_offsets(commit_offsets,
                                              start_new_transaction=start_new_transaction)

    return BatchConsumer


def _chunks(segments: list[tuple[Any, list]], size: int):
    """(records, [(tp, that tp's records in them)]) of at most ``size`` records,
    over per-partition lists of records, in order."""
    part: list = []
    pieces: list[tuple[Any, list]] = []
    for tp, records in segments:
        start = 0
        while start < len(records):
            piece = records[start:start + size - len(part)]
            part += piece
            pieces.append((tp, piece))
            start += len(piece)
            if len(part) == size:
                yield part, pieces
                part, pieces = [], []
    if part:
        yield part, pieces


def use_batch_consumer(app: Any, handlers: Mapping[str, Handler], *,
                       before_commit: Callable[[], Awaitable[None]],
                       lock: Callable[[], asyncio.Lock], chunk: int) -> None:
    """Make ``app`` build a ``batch_consumer_class`` consumer (faust builds its
    consumer lazily, in ``App._new_consumer``, once the worker starts)."""

    def new_consumer() -> Any:
        transport = app.transport
        cls = batch_consumer_class(transport.Consumer, handlers, before_commit=before_commit,
                                   lock=lock, chunk=chunk)
        return cls(transport, callback=app.topics.on_message, loop=transport.loop,
                   on_partitions_revoked=app._on_partitions_revoked,
                   on_partitions_assigned=app._on_partitions_assigned, beacon=app.beacon)

    app._new_consumer = new_consumer


# --- records out in batches -----------------------------------------------------------

def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka's and the
    Java client's) gives ``key``: batches built here land where ``send`` would
    have put each record, so a key's records keep their order."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (aiokafka.partitioner.murmur2, the same numbers): the
    body read as little-endian 32-bit words in one ``struct`` call instead of
    byte by byte: 3.6 instead of 11 us for a CDR's key (aiokafka's was 2% of a
    processor's CPU)."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        rest = words << 2
        if tail >= 3:
            h ^= data[rest + 2] << 16
        if tail >= 2:
            h ^= data[rest + 1] << 8
        h = ((h ^ data[rest]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


async def queue_batches(producer: Any, topic: str,
                        records: Mapping[int, Sequence[tuple[bytes, bytes | None]]]) -> list[asyncio.Future]:
    """Hand ``records`` (partition -> [(key, value)], in order) to an aiokafka
    producer as record batches; returns once all are in its accumulator (a
    ``flush`` then waits for them), with each batch's delivery future."""
    delivered = []
    for partition, items in records.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                delivered.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        delivered.append(await producer.send_batch(batch, topic, partition=partition))
    return delivered


class PartitionBatcher:
    """Records to one topic through an aiokafka producer as record batches, one
    per partition in flight at a time.

    aiokafka's ``send`` costs a future and accumulator work per record;
    ``send_batch`` does not, but it waits while the partition's previous batch
    is still queued, so one caller awaiting it per tick runs at one batch per
    round trip.  Here ``send`` only appends to the partition's buffer and
    returns the future of the batch that will carry the record; one task per
    partition takes the whole buffer each time the previous batch has left.
    Records of a partition keep their order."""

    def __init__(self, producer: Any, topic: str, partitions: int) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions            # the topic's partition count
        self._buffers: dict[int, tuple[list[tuple[bytes, bytes]], asyncio.Future]] = {}
        self._tasks: dict[int, asyncio.Task] = {}

    def send(self, partition: int, key: bytes, value: bytes) -> asyncio.Future:
        """Queue one record; the future resolves once the broker has it."""
        pending = self._buffers.get(partition)
        if pending is None:
            pending = self._buffers[partition] = ([], asyncio.get_running_loop().create_future())
            if partition not in self._tasks:
                self._tasks[partition] = asyncio.ensure_future(self._drain(partition))
        pending[0].append((key, value))
        return pending[1]

    async def _drain(self, partition: int) -> None:
        producer, topic = self.producer, self.topic
        try:
            while (pending := self._buffers.pop(partition, None)) is not None:
                records, done = pending
                try:
                    batches = await queue_batches(producer, topic, {partition: records})
                except Exception as exc:
                    done.set_exception(exc)
                    continue
                _chain(asyncio.gather(*batches), done)
        finally:
            self._tasks.pop(partition, None)

    async def flush(self) -> None:
        """Wait until everything queued so far is with the producer, then for
        the producer to send it."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.producer.flush()


def _chain(source: asyncio.Future, target: asyncio.Future) -> None:
    def copy(_f: asyncio.Future) -> None:
        if target.done():
            return
        if source.cancelled():
            target.cancel()
        elif (exc := source.exception()) is not None:
            target.set_exception(exc)
        else:
            target.set_result(None)
    source.add_done_callback(copy)
