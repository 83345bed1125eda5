"""cdr/drain.py's bulk path: a fetch's records handed over in chunks that
keep each partition's order, acked with faust's own bookkeeping, gaps found
where faust finds them, and the faster murmur2 giving Kafka's partitions."""
from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from types import SimpleNamespace

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.structs import TopicPartition
from faust.transport.consumer import Consumer

from cdr.drain import _chunks, batch_consumer_class, murmur2

TP0, TP1 = TopicPartition("sip.events", 0), TopicPartition("sip.events", 1)


def test_murmur2_is_kafkas():
    for length in range(0, 80):
        for _ in range(25):
            data = os.urandom(length)
            assert murmur2(data) == aiokafka_murmur2(data)
    assert murmur2(b"21") == aiokafka_murmur2(b"21") == -973932308 & 0xFFFFFFFF


def test_chunks_keep_partition_order_and_size():
    segments = [(TP0, list(range(0, 7))), (TP1, list(range(100, 104)))]
    out = list(_chunks(segments, 3))
    assert [part for part, _ in out] == [[0, 1, 2], [3, 4, 5], [6, 100, 101], [102, 103]]
    assert [[(tp.partition, piece) for tp, piece in pieces] for _, pieces in out] == [
        [(0, [0, 1, 2])], [(0, [3, 4, 5])], [(0, [6]), (1, [100, 101])], [(1, [102, 103])]]
    assert list(_chunks([], 3)) == []
    assert [part for part, _ in _chunks(segments, 1000)] == [list(range(7)) + list(range(100, 104))]


class _Acks:
    """The consumer state faust's ack and our bulk ack both touch."""

    def __init__(self, committed: int | None, acks_enabled: bool = True) -> None:
        self._committed_offset = defaultdict(lambda: committed)
        self._acked_index = defaultdict(set)
        self._acked = defaultdict(list)
        self._unacked_messages: set = set()
        self._n_acked = 0
        self._waiting_for_ack = None
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: acks_enabled))


class _Message:
    def __init__(self, tp: TopicPartition, offset: int) -> None:
        self.acked, self.tp, self.offset, self.topic = False, tp, offset, tp.topic


def _cls():
    async def handler(records):
        return None

    async def before_commit():
        return None

    return batch_consumer_class(object, {"sip.events": handler}, before_commit=before_commit,
                                lock=asyncio.Lock, chunk=10)


def test_bulk_ack_is_fausts_ack_per_record():
    cls = _cls()
    offsets = [5, 6, 7, 7, 3, 9, 12, 6]             # duplicates and offsets below the commit
    for committed, enabled in ((None, True), (6, True), (6, False)):
        ours, fausts = _Acks(committed, enabled), _Acks(committed, enabled)
        cls._ack_offsets(ours, TP0, offsets)
        for offset in offsets:
            Consumer.ack(fausts, _Message(TP0, offset))
        assert (dict(ours._acked), dict(ours._acked_index), ours._n_acked) == (
            dict(fausts._acked), dict(fausts._acked_index), fausts._n_acked)


def test_gaps_where_faust_finds_them():
    cls = _cls()

    def gaps(r_offset, offsets):
        found = []

        async def add_gap(tp, start, end):
            found.append((start, end))

        fake = SimpleNamespace(_add_gap=add_gap)
        records = [SimpleNamespace(offset=offset) for offset in offsets]
        asyncio.run(cls._add_gaps(fake, TP0, r_offset, records))
        return found

    def fausts(r_offset, offsets):           # faust's _drain_messages, record by record
        found = []
        for offset in offsets:
            if offset - r_offset > 1:
                found.append((r_offset + 1, offset))
            r_offset = offset
        return found

    for r_offset, offsets in ((9, [10, 11, 12]), (9, [12, 13, 17, 18]), (9, [9, 10, 11]), (3, [10])):
        assert gaps(r_offset, offsets) == fausts(r_offset, offsets)
    assert gaps(9, [10, 11, 12]) == [] and gaps(9, [12, 13, 17]) == [(10, 12), (14, 17)]


class _BatchProducer:
    """aiokafka's batch API as the changelog uses it: faust's producer's
    ``_producer``; a batch holds ``room`` records."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[str, int, list]] = []

    def create_batch(self):
        records: list = []
        room = self.room

        class Batch:
            def append(self, *, key, value, timestamp):
                if len(records) >= room:
                    return None
                records.append((key, value))
                return object()

        batch = Batch()
        batch.records = records
        return batch

    async def send_batch(self, batch, topic, *, partition):
        self.sent.append((topic, partition, batch.records))
        return asyncio.get_running_loop().create_future()


def test_the_changelog_goes_out_in_batches_per_partition():
    from collections import Counter

    from cdr.processor import CdrProcessor, Slot, _slot_decoder

    aio = _BatchProducer(room=2)
    proc = CdrProcessor.__new__(CdrProcessor)
    proc.app = SimpleNamespace(producer=SimpleNamespace(_producer=aio))
    proc.table = SimpleNamespace(data={}, changelog_topic=SimpleNamespace(get_topic_name=lambda: "calls-changelog"))
    proc.stats = SimpleNamespace(counts=Counter())
    proc._unlogged = {}

    async def main():
        await proc._put(b"a", Slot(1, 10))
        proc._put_many({b"b": Slot(2, 10), b"c": Slot(1, 11), b"d": Slot(1, 12)})
        await proc._put(b"a", Slot(1, 20, done=True))
        await proc._delete(b"b", 2)
        await proc.flush_changelog()
        assert [(topic, partition, [key for key, _ in records]) for topic, partition, records in aio.sent] == [
            ("calls-changelog", 1, [b"a", b"c"]), ("calls-changelog", 1, [b"d"]),
            ("calls-changelog", 2, [b"b"])]
        sent = {key: value for _, _, records in aio.sent for key, value in records}
        assert _slot_decoder.decode(sent[b"a"]) == Slot(1, 20, done=True)       # the newest value
        assert sent[b"b"] is None                                                # a tombstone
        assert proc.stats.counts["changelog_records"] == 4
        await proc.flush_changelog()
        assert len(aio.sent) == 3                                                # nothing new

    asyncio.run(main())


def test_the_fold_benchmark_counts_every_call_once():
    # bench/cdr_pipeline.py --mode fold: the processor's step over the bench's
    # call mix; every call ends, so every call gives its rows, the same bytes each run
    from argparse import Namespace

    from bench.cdr_pipeline import run_fold

    result = run_fold(Namespace(calls=300, time_scale=0.1, talk_ms=20_000, repeat=2))
    assert result["rows"] >= 300 and result["events"] > 5 * 300
    assert result["rows_sha1"] == run_fold(Namespace(calls=300, time_scale=0.1, talk_ms=20_000,
                                                     repeat=1))["rows_sha1"]
