"""cdr/drain.py's batch sender and the processor's changelog written per key
and commit (no broker: a fake producer records what would be sent)."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import DefaultPartitioner

from cdr.drain import PartitionBatcher, partition_for
from cdr.processor import CdrProcessor, Slot, _slot_decoder


class FakeBatch:
    def __init__(self, room: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.room = room

    def append(self, *, key, value, timestamp):
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """aiokafka's batch API: a partition takes a new batch only once its
    previous one has left (``release``), as the accumulator does."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.sent: list[tuple[str, int, list]] = []
        self.delivered: list[asyncio.Future] = []
        self.gates: dict[int, asyncio.Event] = {}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(self, batch, topic, *, partition):
        gate = self.gates.setdefault(partition, asyncio.Event())
        if any(p == partition for _, p, _ in self.sent):
            await gate.wait()
            gate.clear()
        self.sent.append((topic, partition, batch.records))
        delivered = asyncio.get_running_loop().create_future()
        self.delivered.append(delivered)
        return delivered

    def release(self, partition: int) -> None:
        self.gates.setdefault(partition, asyncio.Event()).set()

    async def flush(self) -> None:
        pass


def test_partition_for_is_the_default_partitioner():
    for key in (b"a", b"call-1@host", b"x" * 64):
        assert partition_for(key, 6) == DefaultPartitioner()(key, list(range(6)), list(range(6)))


def test_records_queued_while_a_batch_is_out_go_together_in_order():
    async def main():
        producer = FakeProducer()
        out = PartitionBatcher(producer, "t", 2)
        first = out.send(0, b"k1", b"v1")
        await asyncio.sleep(0)                      # the first batch leaves at once
        later = [out.send(0, b"k%d" % n, b"v%d" % n) for n in range(2, 5)]
        other = out.send(1, b"o", b"w")
        await asyncio.sleep(0)
        # partition 0 waits for its first batch to leave; partition 1 is independent
        assert [(p, records) for _, p, records in producer.sent] == [
            (0, [(b"k1", b"v1")]), (1, [(b"o", b"w")])]
        assert len(set(map(id, later))) == 1 and later[0] is not first and other is not first
        producer.release(0)
        for _ in range(3):
            await asyncio.sleep(0)
        assert producer.sent[2] == ("t", 0, [(b"k2", b"v2"), (b"k3", b"v3"), (b"k4", b"v4")])
        assert not first.done()
        for delivered in producer.delivered:
            delivered.set_result(None)
        await asyncio.wait_for(asyncio.gather(first, *later, other), 1)
        await out.flush()
        assert not out._tasks

    asyncio.run(main())


def test_a_full_batch_is_split_and_a_failure_reaches_the_records():
    async def main():
        producer = FakeProducer(room=2)
        out = PartitionBatcher(producer, "t", 1)
        done = [out.send(0, b"k", b"%d" % n) for n in range(5)]
        assert len(set(map(id, done))) == 1          # queued together: one future
        await asyncio.sleep(0)
        for _ in range(3):
            producer.release(0)
            await asyncio.sleep(0)
        assert [[v for _, v in records] for _, _, records in producer.sent] == [
            [b"0", b"1"], [b"2", b"3"], [b"4"]]
        producer.delivered[0].set_result(None)
        producer.delivered[1].set_result(None)
        await asyncio.sleep(0)
        assert not done[0].done()                    # acknowledged only when every batch is
        producer.delivered[2].set_exception(RuntimeError("broker gone"))
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(done[0], 1)

    asyncio.run(main())


class RecordingProducer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None, int]] = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        self.records.append((topic, key, value, partition))


def test_the_changelog_gets_each_key_once_per_commit_with_its_newest_value():
    from collections import Counter
    from types import SimpleNamespace

    proc = CdrProcessor.__new__(CdrProcessor)
    producer = RecordingProducer()
    proc.app = SimpleNamespace(producer=producer)
    proc.table = SimpleNamespace(data={}, changelog_topic=SimpleNamespace(get_topic_name=lambda: "calls-changelog"))
    proc.stats = SimpleNamespace(counts=Counter())
    proc._unlogged = {}

    async def main():
        await proc._put(b"a", Slot(1, 10))
        await proc._put(b"b", Slot(2, 10))
        await proc._put(b"a", Slot(1, 20, done=True))
        await proc._delete(b"b", 2)
        assert proc.table.data == {b"a": Slot(1, 20, done=True)}     # the store changes at once
        assert producer.records == []                                # the changelog waits
        await proc.flush_changelog()
        sent = {key: (value, partition) for _, key, value, partition in producer.records}
        assert len(producer.records) == 2
        assert _slot_decoder.decode(sent[b"a"][0]) == Slot(1, 20, done=True) and sent[b"a"][1] == 1
        assert sent[b"b"] == (None, 2)                               # a tombstone
        await proc.flush_changelog()
        assert len(producer.records) == 2                            # nothing new, nothing sent

    asyncio.run(main())
