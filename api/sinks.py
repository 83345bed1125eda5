"""The sinks of the API process: Kafka topics → ClickHouse, next to the API.

Why here: chdb allows one process per data path, so whatever writes the
ClickHouse tables runs in the process that serves them (api/serve.py):

* the CDR sink: ``[cdr] records_topic`` → ``cdr`` (cdr/store/sink.py);
* the trace sink: ``[trace] topic`` → ``sip_trace`` and its retention
  (cdr/store/trace.py, docs/trace.md);
* the ledger sink: ``[ledger] events_topic`` → ``ledger_events``, and the
  ledger repair that re-inserts what the broker lost, from the SQL ledger
  (billing/ledger/clickhouse.py).

``Sinks.start(tasks)`` adds one asyncio task each to ``tasks``; ``stop()``
asks them to finish (each inserts and commits what it holds); ``close()``
closes the repair's ledger store once they have.
"""
from __future__ import annotations

import asyncio
import os

from billing.ledger.clickhouse import LedgerQueries, LedgerRepair, LedgerSink
from billing.ledger.store import LedgerStore
from cdr.store.queries import CdrStore
from cdr.store.sink import CdrSink
from cdr.store.trace import TraceRetention, TraceStore
from proxy.contract.trace import TraceBatch
from proxy.infra import metrics
from proxy.infra.clickhouse.sink import TopicSink
from proxy.infra.config import Config, KafkaSettings

__all__ = ["Sinks"]


class Sinks:
    def __init__(self, store: CdrStore, kafka: KafkaSettings, config: Config, data_dir: str | os.PathLike):
        ch, ledger = config.clickhouse, config.ledger
        self.cdr = CdrSink(store, kafka, topic=config.cdr.records_topic, group_id=ch.consumer_group,
                           batch_rows=ch.batch_rows, batch_ms=ch.batch_ms,
                           partitions=config.cdr.partitions or kafka.partitions)
        self.traces = TraceStore(store.backend)
        self.trace: TopicSink[TraceBatch] = TopicSink(
            TraceBatch, self.traces.insert_batches, kafka, topic=config.trace.topic, group_id="trace-sink",
            batch_rows=max(1, ch.batch_rows // 64), batch_ms=ch.batch_ms, partitions=kafka.partitions)
        self.trace_retention = TraceRetention(self.traces, config.trace.retention_days)
        queries = LedgerQueries(store.backend)
        self.ledger = LedgerSink(queries, kafka, topic=ledger.events_topic, group_id=ledger.sink_group,
                                 batch_rows=ch.batch_rows, batch_ms=ch.batch_ms,
                                 partitions=ledger.partitions or kafka.partitions)
        self.ledger_store = LedgerStore(config.billing.database_url(data_dir))
        try:
            self.ledger_store.create_schema()
        except BaseException:
            self.ledger_store.close()
            raise
        self.repair = LedgerRepair(queries, self.ledger_store, interval_s=ledger.repair_seconds)
        self._lag: asyncio.Task | None = None

    def start(self, tasks: dict[str, asyncio.Task]) -> None:
        tasks["sink"] = asyncio.create_task(self.cdr.run(), name="cdr-sink")
        tasks["trace-sink"] = asyncio.create_task(self.trace.run(), name="trace-sink")
        tasks["trace-retention"] = asyncio.create_task(self.trace_retention.run(), name="trace-retention")
        tasks["ledger-sink"] = asyncio.create_task(self.ledger.run(), name="ledger-sink")
        tasks["ledger-repair"] = asyncio.create_task(self.repair.run(), name="ledger-repair")
        if metrics.enabled():
            self._lag = tasks["sink-lag"] = asyncio.create_task(self._report_lag(), name="sink-lag")

    async def _report_lag(self) -> None:
        """The sinks' consumer lag for /metrics (docs/metrics.md), once a second."""
        while True:
            await asyncio.sleep(1.0)
            for name, sink in (("cdr_sink", self.cdr), ("ledger_sink", self.ledger)):
                consumer = sink.consumer
                if consumer is not None:
                    metrics.set_lag(name, await metrics.aiokafka_lag(consumer))

    def stop(self) -> None:
        if self._lag is not None:
            self._lag.cancel()
        self.cdr.stop()
        self.ledger.stop()
        self.repair.stop()
        self.trace.stop()
        self.trace_retention.stop()

    def close(self) -> None:
        self.ledger_store.close()
