"""The sinks of the API process: Kafka topics → ClickHouse, next to the API.

Why here: chdb allows one process per data path, so whatever writes the
ClickHouse tables runs in the process that serves them (api/serve.py):

* the CDR sink: ``[cdr] records_topic`` → ``cdr`` (cdr/store/sink.py);
* the trace sink: ``[trace] topic`` → ``sip_trace`` and its retention
  (cdr/store/trace.py, docs/trace.md);
* the CDR statistics roll-up: closed days of ``cdr_call`` merged and counted
  into ``cdr_day`` (cdr/store/rollup.py);
* the ledger sink: ``[ledger] events_topic`` → ``ledger_events``, and the
  ledger repair that re-inserts what the broker lost, from the SQL ledger
  (billing/ledger/clickhouse.py);
* the archiver: ``sip.events``, ``ledger.events`` and ``call.control`` →
  ``events`` (cdr/archive/sink.py, docs/operations.md); ledger events the
  repair re-inserts are archived too;
* the CDR repair: calls the archive shows over without a CDR are folded
  from the archive, their rows published to ``cdr.records`` (cdr/archive/repair.py);
  with it, ledger events ``ledger_events`` has and the archive lacks (the
  archiver had not read them when the broker died) are archived from there.

Every sink restarts its consumer when the embedded broker restarted under it
(the broker epoch `up` writes to DATA_DIR/run/kafka.json, proxy/infra/epoch.py).

``Sinks.start(tasks)`` adds one asyncio task each to ``tasks``; ``stop()``
asks them to finish (each inserts and commits what it holds); ``close()``
closes the repair's ledger store once they have.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import cast

import msgspec
from aiokafka import AIOKafkaProducer

from billing.ledger.clickhouse import EVENT_SELECT, LedgerQueries, LedgerRepair, LedgerSink, row_event
from billing.ledger.store import LedgerStore
from cdr.archive.rebuild import RebuildLimits
from cdr.archive.repair import CdrRepair
from cdr.archive.sink import ArchiveSink, archived
from cdr.archive.store import ArchiveStore
from cdr.store.queries import CdrStore
from cdr.store.rollup import RollUp
from cdr.store.sink import CdrSink
from cdr.store.trace import TraceRetention, TraceStore
from proxy.contract.cdr import CdrLeg
from proxy.contract.ledger import LedgerEvent, encode_event
from proxy.contract.trace import TraceBatch
from proxy.infra import clock, metrics
from proxy.infra.clickhouse.sink import TopicSink
from proxy.infra.config import RUN_DIR, Config, KafkaSettings
from proxy.infra.epoch import BrokerEpoch
from proxy.infra.kafka import producer_kwargs

__all__ = ["Sinks"]

log = logging.getLogger("sipledger.sinks")


class Sinks:
    def __init__(self, store: CdrStore, kafka: KafkaSettings, config: Config, data_dir: str | os.PathLike):
        ch, ledger = config.clickhouse, config.ledger
        run_dir = Path(data_dir) / RUN_DIR
        epoch = BrokerEpoch(run_dir)
        self.cdr = CdrSink(store, kafka, topic=config.cdr.records_topic, group_id=ch.consumer_group,
                           batch_rows=ch.batch_rows, batch_ms=ch.batch_ms,
                           partitions=config.cdr.partitions or kafka.partitions)
        self.cdr.epoch = epoch
        self.traces = TraceStore(store.backend)
        self.trace: TopicSink[TraceBatch] = TopicSink(
            TraceBatch, self.traces.insert_batches, kafka, topic=config.trace.topic, group_id="trace-sink",
            batch_rows=max(1, ch.batch_rows // 64), batch_ms=ch.batch_ms, partitions=kafka.partitions)
        self.trace.epoch = epoch
        self.trace_retention = TraceRetention(self.traces, config.trace.retention_days)
        self.cdr_rollup = RollUp(store.backend)
        queries = LedgerQueries(store.backend)
        self.ledger = LedgerSink(queries, kafka, topic=ledger.events_topic, group_id=ledger.sink_group,
                                 batch_rows=ch.batch_rows, batch_ms=ch.batch_ms,
                                 partitions=ledger.partitions or kafka.partitions)
        self.ledger.epoch = epoch
        self.archive: ArchiveSink | None = None
        self.cdr_repair: CdrRepair | None = None
        self._rows_out: _RowPublisher | None = None
        if config.archive.enabled:
            self.archive = ArchiveSink(
                ArchiveStore(store.backend), kafka, sip_topic=config.topics.sip_events,
                ledger_topic=ledger.events_topic, control_topic=config.topics.call_control,
                group_id=config.archive.group, batch_rows=config.archive.batch_rows or ch.batch_rows,
                batch_ms=config.archive.batch_ms or ch.batch_ms,
                partitions={config.topics.sip_events: kafka.partitions,
                            ledger.events_topic: ledger.partitions or kafka.partitions,
                            config.topics.call_control: kafka.partitions},
                epoch=epoch, run_dir=run_dir)
            queries = cast(LedgerQueries, _ArchivingLedger(queries, self.archive.store))
            a, limits = config.archive, RebuildLimits.of(config)
            self._rows_out = _RowPublisher(kafka, config.cdr.records_topic)
            self.cdr_repair = CdrRepair(self.archive.store, self._rows_out.publish, window_ms=limits.window_ms,
                                        span_ms=limits.span_ms, interval_s=a.repair_seconds,
                                        grace_s=a.repair_grace_seconds, lookback_s=a.repair_lookback_seconds)
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
        tasks["cdr-rollup"] = asyncio.create_task(self.cdr_rollup.run(), name="cdr-rollup")
        tasks["ledger-sink"] = asyncio.create_task(self.ledger.run(), name="ledger-sink")
        tasks["ledger-repair"] = asyncio.create_task(self.repair.run(), name="ledger-repair")
        if self.archive is not None:
            tasks["archive"] = asyncio.create_task(self.archive.run(), name="archive")
        if self.cdr_repair is not None:
            tasks["cdr-repair"] = asyncio.create_task(self.cdr_repair.run(), name="cdr-repair")
            tasks["ledger-archive"] = asyncio.create_task(self._ledger_gaps(), name="ledger-archive")
        if metrics.enabled():
            self._lag = tasks["sink-lag"] = asyncio.create_task(self._report_lag(), name="sink-lag")

    async def _report_lag(self) -> None:
        """The sinks' consumer lag for /metrics (docs/metrics.md), once a second."""
        while True:
            await asyncio.sleep(1.0)
            sinks: list[tuple[str, TopicSink]] = [("cdr_sink", self.cdr), ("ledger_sink", self.ledger)]
            if self.archive is not None:
                sinks.append(("archive", self.archive))
            for name, sink in sinks:
                consumer = sink.consumer
                if consumer is not None:
                    metrics.set_lag(name, await metrics.aiokafka_lag(consumer))

    async def _ledger_gaps(self) -> None:
        repair = self.cdr_repair
        assert repair is not None and self.archive is not None
        while not await _stopped(repair, repair.interval_s or 3600.0):
            if repair.interval_s <= 0:
                continue
            try:
                count = await asyncio.to_thread(archive_ledger_gaps, self.archive.store,
                                                clock.now_ms(), repair.grace_ms, repair.lookback_ms)
            except Exception as exc:        # the store is not there: next round
                log.warning("ledger archive repair failed: %r", exc)
                continue
            if count:
                log.warning("ledger archive repair: %d ledger events archived from ledger_events", count)

    def stop(self) -> None:
        if self._lag is not None:
            self._lag.cancel()
        self.cdr.stop()
        self.ledger.stop()
        if self.archive is not None:
            self.archive.stop()
        if self.cdr_repair is not None:
            self.cdr_repair.stop()
        self.repair.stop()
        self.trace.stop()
        self.trace_retention.stop()
        self.cdr_rollup.stop()

    def close(self) -> None:
        self.ledger_store.close()

    async def aclose(self) -> None:
        """Close what the tasks leave open (the repair's producer)."""
        if self._rows_out is not None:
            await self._rows_out.close()


class _ArchivingLedger:
    """The ledger repair's ClickHouse copy, archiving what it re-inserts: events
    the broker lost before the archiver read them exist only in SQLite."""

    def __init__(self, queries: LedgerQueries, archive: ArchiveStore) -> None:
        self._queries = queries
        self._archive = archive

    def insert(self, events: list) -> int:
        count = self._queries.insert(events)
        self._archive.insert([archived("ledger", encode_event(event)) for event in events])
        return count

    def __getattr__(self, name: str):
        return getattr(self._queries, name)


class _RowPublisher:
    """CDR rows to ``cdr.records`` as the processor sends them (key cdr_id, JSON)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, rows: list[CdrLeg]) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(**producer_kwargs(self.kafka))
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        try:
            futures = [await self._producer.send(self.topic, msgspec.json.encode(row), key=row.cdr_id.encode())
                       for row in rows]
            await asyncio.gather(*futures)
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


async def _stopped(repair: CdrRepair, seconds: float) -> bool:
    """Sleep ``seconds`` unless the repair is stopped first (True then)."""
    try:
        await asyncio.wait_for(repair.stopping.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


def archive_ledger_gaps(archive: ArchiveStore, now_ms: int, grace_ms: int, lookback_ms: int) -> int:
    """Archive the ledger events of the last ``lookback_ms`` (older than
    ``grace_ms``) that ``ledger_events`` holds and ``events`` lacks; returns how many."""
    lo, hi = max(0, now_ms - lookback_ms), now_ms - grace_ms
    rows = archive.backend.query_dicts(
        f"SELECT {EVENT_SELECT} FROM ledger_events WHERE ts >= toDateTime({{lo_s}}) "
        "AND ts_ms >= {lo} AND ts_ms < {hi} "
        "AND id NOT IN (SELECT id FROM events WHERE source = 'ledger' AND ts >= toDateTime({lo_s})) "
        "ORDER BY seq LIMIT 1 BY id", {"lo_s": lo // 1000, "lo": lo, "hi": hi})
    events = [msgspec.convert({k: v for k, v in row_event(row).items() if k not in _DELTAS}, LedgerEvent)
              for row in rows]
    return archive.insert([archived("ledger", encode_event(event)) for event in events])


_DELTAS = ("balance_delta", "reserved_delta")
