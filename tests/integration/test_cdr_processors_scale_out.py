"""Two CDR processors (``python -m cdr --worker-id N``) in one consumer group: they split
the partitions of sip.events, and when one is killed with calls half-way through,
the survivor takes its partitions, restores their open calls from the changelog
and closes them: every call has exactly its CDR rows (byte-identical duplicates
are allowed on cdr.records: the ClickHouse table deduplicates by (cdr_id, leg))."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from bench.cdr_pipeline import SHAPES, Worker, call_events, write_config
from cdr.processor import decode_row
from proxy.infra import clock
from proxy.infra.config import KafkaSettings
from proxy.infra.kafka import ensure_topics_sync
from tests.harness.broker import produce, unique_topic
from tests.harness.poll import eventually
from tests.integration.test_cdr_processor import _expected, _records, _wait_rows

pytestmark = pytest.mark.integration


def _assigned(worker: Worker, topic: str) -> bool:
    last = worker.log_text().rsplit("Setting newly assigned partitions", 1)
    return len(last) == 2 and topic in last[1].split("for group", 1)[0]


def test_two_processors_share_and_survive_a_kill(broker, tmp_path):
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    events_topic, records_topic = unique_topic("sip.events"), unique_topic("cdr.records")
    ensure_topics_sync(settings, {events_topic: 6})
    config = write_config(tmp_path / "cdr.toml", {"topics": {"sip_events": events_topic}},
                          app_id=f"it-scale-{uuid.uuid4().hex[:8]}", records_topic=records_topic,
                          silence_seconds=300, timer_seconds=0.5, batch_window_ms=20, finished_ttl_seconds=600)
    workers = [Worker(broker.bootstrap, tmp_path / "data", config, i, tmp_path / f"w{i}.log").start()
               for i in range(2)]
    try:
        for worker in workers:
            worker.wait_ready(40)
        eventually(lambda: all(_assigned(w, events_topic) for w in workers), "both processors to get partitions",
                   timeout=30)
        now = clock.now_ms()
        calls = {f"sc-{i:03d}-{SHAPES[i % len(SHAPES)]}@test":
                 call_events(SHAPES[i % len(SHAPES)], f"sc-{i:03d}-{SHAPES[i % len(SHAPES)]}@test", now + i * 7,
                             scale=0.01) for i in range(40)}
        expected = _expected(calls)
        # the first half of every call, processed and committed (faust commits every 2.8 s: the
        # survivor restores those calls from the changelog, no replay does it), then kill -9 one
        asyncio.run(produce(settings, events_topic, [r for e in calls.values() for r in _records(e[:len(e) // 2])]))
        time.sleep(4)
        assignments = workers[1].log_text().count("Setting newly assigned partitions")
        workers[0].kill()
        killed = time.monotonic()
        asyncio.run(produce(settings, events_topic, [r for e in calls.values() for r in _records(e[len(e) // 2:])]))
        eventually(lambda: workers[1].log_text().count("Setting newly assigned partitions") > assignments,
                   "the survivor to be assigned the dead one's partitions", timeout=30)
        print(f"\nCDR processor take-over after kill -9: {time.monotonic() - killed:.1f}s")
        got = asyncio.run(_wait_rows(settings, records_topic, expected, 60))
        assert set(got) == expected, f"missing {len(expected - set(got))}, unexpected {len(set(got) - expected)}"
        by_cdr: dict[str, set] = {}
        for row in map(decode_row, got):
            by_cdr.setdefault(row.cdr_id, set()).add((row.leg, row.legs))
        assert len(by_cdr) == len(calls), "one CDR per call"
        assert all({leg for leg, _ in legs} == set(range(next(iter(legs))[1])) for legs in by_cdr.values())
        assert _assigned(workers[1], events_topic)
    finally:
        for worker in workers:
            worker.stop()
