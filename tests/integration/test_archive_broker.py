"""No event is lost when the memory-only broker dies (docs/operations.md).

The proxy's publisher with archive retention, the archiver (chdb) and a real
Tansu killed with SIGKILL at several moments while events flow: delivered,
not yet delivered, and delivered but not yet archived.  `up`'s part is played
by hand: a new broker epoch in kafka.json before the topics are created again.
Afterwards the archive holds every event (one copy per id when read) and the
outboxes keep nothing."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from bench.cdr_pipeline import call_events
from cdr.archive.sink import ArchiveSink
from cdr.archive.store import ArchiveStore
from proxy.contract import events as ev
from proxy.events.outbox import Outbox
from proxy.events.publisher import EventPublisher
from proxy.events.retention import ArchiveRetention
from proxy.infra.clickhouse.backend import ChdbBackend
from proxy.infra.clickhouse.migrate import migrate
from proxy.infra.config import KAFKA_RUN_FILE
from proxy.infra.epoch import BrokerEpoch
from proxy.infra.kafka import ensure_topics_sync
from proxy.infra.runfiles import write_json_atomically
from tests.harness.broker import settings_for

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
TOPICS = {"sip.events": 6, "ledger.events": 6, "call.control": 6}


def test_broker_kill_loses_no_archived_event(fresh_broker, tmp_path):
    run_dir = tmp_path / "run"
    settings = settings_for(fresh_broker)
    epochs = iter(range(100))

    def name_broker() -> None:        # what `up` does after each broker start
        write_json_atomically(run_dir / KAFKA_RUN_FILE, {"bootstrap": fresh_broker.bootstrap,
                                                          "broker_epoch": f"test-{next(epochs)}"})
        ensure_topics_sync(settings, TOPICS)

    name_broker()
    backend = ChdbBackend(tmp_path / "chdb")
    migrate(backend)
    archive = ArchiveStore(backend)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    calls = [call_events("answered_caller_bye", f"k{i}@test", T0 + i * 1000) for i in range(120)]
    sent = {e.id for events in calls for e in events}

    async def scenario() -> None:
        sink = ArchiveSink(archive, settings, sip_topic="sip.events", ledger_topic="ledger.events",
                           control_topic="call.control", partitions=TOPICS, batch_ms=50,
                           epoch=BrokerEpoch(run_dir), run_dir=run_dir)
        publisher = EventPublisher(outbox, settings, "sip.events", backoff_max=0.5,
                                   retention=ArchiveRetention(run_dir, keep_rows=100_000))
        sink_task = asyncio.create_task(sink.run())
        publisher.start()
        try:
            for round_, chunk in enumerate((calls[:60], calls[60:])):
                for events in chunk:
                    for e in events:
                        outbox.append(ev.key_bytes(e.call_id), ev.encode(e))
                outbox.flush()
                publisher.wake()
                # kill at a different moment each round: mid-delivery, after delivery
                await asyncio.sleep((0.2, 1.5)[round_])
                os.kill(fresh_broker.pid, signal.SIGKILL)
                await asyncio.sleep(0.3)
                await asyncio.to_thread(fresh_broker.start)
                await asyncio.to_thread(name_broker)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 40
            while loop.time() < deadline and (outbox.count() or outbox.kept):
                await asyncio.sleep(0.2)
            assert (outbox.count(), outbox.kept) == (0, 0), (publisher.resent, publisher.archived)
            assert publisher.resent > 0          # the kills did hit events not yet archived
        finally:
            await publisher.stop(drain_timeout=1)
            sink.stop()
            await asyncio.wait_for(sink_task, 20)

    try:
        asyncio.run(scenario())
        distinct, rows = archive.count("sip")
        archived_ids = {row[0] for row in backend.query("SELECT DISTINCT id FROM events")}
        assert archived_ids == sent and distinct == len(sent)
        print(f"\nbroker kills: 2, events {len(sent)}, archived rows {rows} (copies collapse on read)")
    finally:
        outbox.close()
        backend.close()
