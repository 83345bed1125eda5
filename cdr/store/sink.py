"""The CDR sink: ``cdr.records`` (CdrLeg JSON, key = cdr_id) → the ``cdr`` table.

The batching / commit / retry loop is the shared ``TopicSink``
(proxy/infra/clickhouse/sink.py); the ``cdr`` table is a ReplacingMergeTree on
(cdr_id, leg), so a record read twice is harmless.
"""
from __future__ import annotations

from collections.abc import Callable

from proxy.contract.cdr import CdrLeg
from proxy.infra.clickhouse.sink import SinkStats, TopicSink
from proxy.infra.config import KafkaSettings

from .queries import CdrStore
from .rows import problem

__all__ = ["CdrSink", "SinkStats"]


class CdrSink(TopicSink[CdrLeg]):
    def __init__(self, store: CdrStore, kafka: KafkaSettings, *, topic: str = "cdr.records",
                 group_id: str = "cdr-sink", batch_rows: int = 5000, batch_ms: int = 200,
                 partitions: int | None = None, create_topic: bool = True,
                 on_insert: Callable[[list[CdrLeg]], None] | None = None) -> None:
        super().__init__(CdrLeg, store.insert_legs, kafka, topic=topic, group_id=group_id,
                         problem=problem, batch_rows=batch_rows, batch_ms=batch_ms,
                         partitions=partitions, create_topic=create_topic, on_insert=on_insert)
        self.store = store
