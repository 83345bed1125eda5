"""Outbox → EventPublisher → real Tansu → read back."""
from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

import pytest

from proxy.contract import events
from proxy.events.outbox import Outbox
from proxy.events.publisher import EventPublisher
from proxy.infra.kafka import ensure_topics, topic_partitions
from tests.harness.broker import read_all, settings_for, standard_topics, unique_topic
from tests.harness.poll import aeventually

pytestmark = pytest.mark.integration

CALLS = 200
WAIT = 30.0


class EventSource:
    """Appends real encoded events for CALLS calls, round robin, like a busy
    proxy would: each call's events in order (``ts_ms`` counts them)."""

    def __init__(self, outbox: Outbox, publisher: EventPublisher) -> None:
        self.outbox, self.publisher = outbox, publisher
        self.sent: list[events.CallEvent] = []

    async def append(self, count: int, chunk: int = 100) -> list[str]:
        """Append ``count`` events, flushing and waking per chunk as the runtime
        does per loop iteration.  Returns their ids."""
        ids = []
        for start in range(0, count, chunk):
            for _ in range(min(chunk, count - start)):
                event = self._next_event()
                self.outbox.append(event.call_id.encode(), events.encode(event))
                ids.append(event.id)
            self.outbox.flush()
            self.publisher.wake()
            await asyncio.sleep(0)
        return ids

    def _next_event(self) -> events.CallEvent:
        n = len(self.sent)
        event = events.CallProgress(id=events.new_event_id(), ts_ms=n, call_id=f"call-{n % CALLS}@test",
                                    from_tag=f"tag-{n % CALLS}", proxy="test", leg=0, code=180, reason="Ringing")
        self.sent.append(event)
        return event


def assert_exactly_once_in_key_order(records, expected_ids: list[str]) -> None:
    decoded = [events.decode(record.value) for record in records]
    counts = Counter(event.id for event in decoded)
    missing = set(expected_ids) - set(counts)
    duplicated = {event_id for event_id, n in counts.items() if n > 1}
    unexpected = set(counts) - set(expected_ids)
    assert not missing and not duplicated and not unexpected, (
        f"{len(missing)} missing, {len(duplicated)} duplicated, {len(unexpected)} unexpected")
    by_call: dict[str, list[int]] = defaultdict(list)
    for record, event in sorted(zip(records, decoded), key=lambda pair: (pair[0].partition, pair[0].offset)):
        assert record.key == event.call_id.encode()
        by_call[event.call_id].append(event.ts_ms)
    for call_id, order in by_call.items():
        assert order == sorted(order), f"{call_id} out of order"


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


async def test_every_event_once_in_per_call_order(kafka_settings, outbox):
    topic = unique_topic("events")
    await ensure_topics(kafka_settings, {topic: 6})
    publisher = EventPublisher(outbox, kafka_settings, topic, batch=500)
    publisher.start()
    try:
        source = EventSource(outbox, publisher)
        ids = await source.append(2000)
        await aeventually(lambda: outbox.count() == 0, "outbox drained", WAIT)
    finally:
        assert await publisher.stop() == 0
    assert publisher.published == 2000 and publisher.pending == 0
    assert_exactly_once_in_key_order(await read_all(kafka_settings, topic, at_least=2000), ids)


async def test_rounds_are_paced_into_bigger_batches(kafka_settings, outbox):
    """With ``min_interval_s`` the rows of many outbox flushes go out in few
    delivery rounds (the proxy's ``publish_interval_ms``); every event still
    arrives once, in order."""
    topic = unique_topic("paced")
    await ensure_topics(kafka_settings, {topic: 6})
    publisher = EventPublisher(outbox, kafka_settings, topic, batch=500, min_interval_s=0.5)
    rounds = []
    deliver = publisher._deliver

    async def counted(rows):
        rounds.append(len(rows))
        await deliver(rows)
    publisher._deliver = counted
    publisher.start()
    try:
        source = EventSource(outbox, publisher)
        ids = []
        for _ in range(20):                      # 20 flushes of 10 rows within ~0.2 s
            ids += await source.append(10, chunk=10)
            await asyncio.sleep(0.01)
        await aeventually(lambda: outbox.count() == 0, "outbox drained", WAIT)
    finally:
        assert await publisher.stop() == 0
    assert sum(rounds) == 200
    # the first flush at once, the rest after the interval (a slow host only merges more)
    assert len(rounds) <= 3, rounds
    assert_exactly_once_in_key_order(await read_all(kafka_settings, topic, at_least=200), ids)


async def test_events_appended_during_a_broker_outage_arrive_once(fresh_broker, outbox):
    settings = settings_for(fresh_broker)
    topic = "sip.events"
    # A short request timeout: the outage is noticed sooner (the default is 5 s).
    publisher = EventPublisher(outbox, settings, topic, request_timeout_ms=1000)
    publisher.start()
    try:
        source = EventSource(outbox, publisher)
        before = await source.append(300)
        await aeventually(lambda: outbox.count() == 0, "first events delivered", WAIT)

        fresh_broker.stop()
        failures = publisher.failed_attempts
        during = await source.append(500)
        await aeventually(lambda: publisher.failed_attempts > failures, "publisher noticed the outage", WAIT)
        assert outbox.count() >= 500  # kept, not lost

        await asyncio.to_thread(fresh_broker.start)  # same port, no topics
        # It tries against the restarted broker, and does not create the topic itself.
        await aeventually(lambda: "UnknownTopicOrPartition" in (publisher.last_error or ""),
                         "publisher found the topic missing", WAIT)
        assert await topic_partitions(settings, topic) is None
        assert await ensure_topics(settings, standard_topics(settings)) == standard_topics(settings)
        after = await source.append(200)
        await aeventually(lambda: outbox.count() == 0, "outbox drained after the restart", WAIT)
    finally:
        await publisher.stop()

    records = await read_all(settings, topic, at_least=700)
    # The restarted broker lost the first 300 (memory storage): they were delivered before.
    assert_exactly_once_in_key_order(records, during + after)
    assert not set(before) & {events.decode(r.value).id for r in records}


async def test_stop_drains_what_is_pending(kafka_settings, outbox):
    topic = unique_topic("drain")
    await ensure_topics(kafka_settings, {topic: 3})
    publisher = EventPublisher(outbox, kafka_settings, topic, batch=200)
    publisher.start()
    for i in range(1000):
        outbox.append(b"call-%d" % (i % 50), events.encode(events.CallAck(
            id=f"drain-{i}", ts_ms=i, call_id=f"call-{i % 50}", from_tag="t", proxy="test")))
    # Neither flushed nor woken: stop() must do both.
    assert await publisher.stop(drain_timeout=20) == 0
    assert outbox.count() == 0
    records = await read_all(kafka_settings, topic, at_least=1000)
    assert sorted(events.decode(r.value).id for r in records) == sorted(f"drain-{i}" for i in range(1000))


async def test_stop_keeps_rows_it_could_not_deliver(kafka_settings, outbox):
    """No topic: nothing is delivered, nothing is lost, stop() returns in time."""
    publisher = EventPublisher(outbox, kafka_settings, unique_topic("absent"))
    publisher.start()
    outbox.append(b"k", b"v")
    assert await publisher.stop(drain_timeout=0.5) == 1
    assert outbox.count() == 1 and publisher.published == 0
