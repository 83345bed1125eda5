"""The shared Kafka → ClickHouse sink loop (proxy/infra/clickhouse/sink.py) over a
consumer double: one insert at a time while fetching goes on, offsets committed
only after the insert holding their records, in order; rejected records skipped
and committed past."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import msgspec
import pytest
from aiokafka import TopicPartition

from proxy.infra.clickhouse.sink import TopicSink
from proxy.infra.config import KafkaSettings
from tests.harness.poll import aeventually

TP = TopicPartition("t", 0)


class Row(msgspec.Struct, frozen=True):
    n: int


@dataclass
class Record:
    offset: int
    value: bytes


class Consumer:
    """getmany hands out the batches given to ``feed``; commits are logged with
    the rows inserted by then."""

    def __init__(self, inserted: list[int]) -> None:
        self.batches: asyncio.Queue = asyncio.Queue()
        self.fetches = 0
        self.commits: list[tuple[int, int]] = []     # (offset committed, rows inserted at that moment)
        self._inserted = inserted

    def feed(self, *values: int, start: int) -> None:
        self.batches.put_nowait([Record(start + i, msgspec.json.encode(Row(v)) if v >= 0 else b"{bad")
                                 for i, v in enumerate(values)])

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.fetches += 1
        try:
            # at most 50 ms, like a fetch: the loop sees stop() soon
            records = await asyncio.wait_for(self.batches.get(), min(timeout_ms / 1000, 0.05))
        except asyncio.TimeoutError:
            return {}
        return {TP: records}

    async def commit(self, offsets: dict) -> None:
        self.commits.append((offsets[TP].offset, len(self._inserted)))


async def test_records_fetched_during_an_insert_go_in_right_after_it_and_commits_follow_inserts():
    inserted: list[int] = []
    release = threading.Event()

    def insert(rows: list[Row]) -> int:
        if not inserted:
            assert release.wait(10), "the first insert was never released"
        inserted.extend(row.n for row in rows)
        return len(rows)

    sink: TopicSink[Row] = TopicSink(Row, insert, KafkaSettings(), topic="t", group_id="g",
                                     problem=lambda row: "negative" if row.n < 0 else None,
                                     batch_rows=3, batch_ms=60_000)
    consumer = Consumer(inserted)
    sink._consumer = consumer       # type: ignore[assignment]
    task = asyncio.create_task(sink._consume())
    try:
        consumer.feed(1, 2, 3, start=0)                 # a full batch: its insert starts and blocks
        await aeventually(lambda: sink.stats.received == 3 and not sink._buffer, "the first insert to start")
        consumer.feed(4, 5, start=3)
        consumer.feed(-1, 6, start=5)                   # not JSON, then the batch's third row
        # fetching went on during the insert; nothing inserted nor committed yet
        await aeventually(lambda: sink.stats.received == 7, "the records fetched during the insert")
        assert inserted == [] and consumer.commits == []
        assert sink.stats.rejected == 1 and [row.n for row in sink._buffer] == [4, 5, 6]
        release.set()
        await aeventually(lambda: len(consumer.commits) == 2, "both batches committed")
        assert inserted == [1, 2, 3, 4, 5, 6]
        # each commit after the insert of its records, in offset order, past the rejected one
        assert consumer.commits == [(3, 3), (7, 6)]
    finally:
        release.set()
        sink.stop()
        await asyncio.wait_for(task, 10)


async def test_an_insert_that_raises_ends_the_loop_as_before():
    def insert(rows: list[Row]) -> int:
        raise ValueError("not storable")

    sink: TopicSink[Row] = TopicSink(Row, insert, KafkaSettings(), topic="t", group_id="g", batch_rows=1)
    consumer = Consumer([])
    sink._consumer = consumer       # type: ignore[assignment]
    consumer.feed(1, start=0)
    with pytest.raises(ValueError, match="not storable"):
        await asyncio.wait_for(sink._consume(), 10)
    assert consumer.commits == []
