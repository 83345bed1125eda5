"""The CDR processor (``python -m cdr``, faust) against the real Tansu broker.

Each test uses its own topics and app ids on the session broker.  Expected rows
come from the pure fold (proxy/contract/callfold.py) over the same events: the processor must
publish exactly those rows, whatever the crashes, duplicates and replays
(identical duplicates on cdr.records are allowed: the sink is idempotent).
"""
from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from bench.cdr_pipeline import SHAPES, CallBuilder, Worker, call_events, write_config
from cdr.processor import decode_row, encode_row
from proxy.contract import events as ev
from proxy.contract.callfold import finish, fold, silence_end_ms
from proxy.infra import clock
from proxy.infra.config import KafkaSettings
from proxy.infra.kafka import TANSU_FETCH_MAX_WAIT_MS, ensure_topics_sync, faust_app, producer_kwargs, tansu_end_offsets
from tests.harness.broker import produce, read_all, unique_topic
from tests.harness.poll import aeventually

SILENCE_S = 4


def _config(tmp_path, name, events_topic, records_topic, app_id, **cdr):
    return write_config(tmp_path / f"{name}.toml", {"topics": {"sip_events": events_topic}},
                        app_id=app_id, records_topic=records_topic, silence_seconds=SILENCE_S,
                        timer_seconds=0.5, batch_window_ms=20, finished_ttl_seconds=600, **cdr)


def _records(events) -> list[tuple[bytes, bytes]]:
    return [(e.call_id.encode(), ev.encode(e)) for e in events]


async def _wait_rows(settings, topic, expected: set[bytes], timeout: float) -> list[bytes]:
    """Every record value on ``topic`` once the expected ones are all there (or
    what is there at the timeout: the caller's assertion says what is missing)."""
    values: list[bytes] = []

    async def all_there() -> bool:
        values[:] = [r.value for r in await read_all(settings, topic, at_least=0, timeout=5)]
        return expected <= set(values)

    await aeventually(all_there, timeout=timeout, interval=0.3, fail=False)
    return values


async def _wait_any(settings, topic, wanted: set[bytes], timeout: float) -> None:
    async def any_there() -> bool:
        return bool(wanted & {r.value for r in await read_all(settings, topic, at_least=0, timeout=5)})

    # the caller goes on either way: what matters is to kill the worker soon after the first row
    await aeventually(any_there, timeout=timeout, fail=False)


def _expected(calls: dict[str, list]) -> set[bytes]:
    return {encode_row(row) for events in calls.values() for row in finish(fold(events), 0)}


def _silent_call(call_id: str, t0: int) -> tuple[list, set[bytes]]:
    c = CallBuilder(call_id, t0, from_tag="ft-silent", proxy="node-a")
    c.at(0).invite(); c.at(2).route(0); c.at(50).progress(0); c.at(400).answer(0, max_duration_s=2); c.at(410).ack(0)
    state = fold(c.events)
    rows = finish(state, silence_end_ms(state, SILENCE_S * 1000), silence=True)
    return c.events, {encode_row(row) for row in rows}


@pytest.mark.clock                 # silence is judged on the processor's clock against event times
def test_calls_to_cdrs_through_crash_duplicates_replay_and_silence(broker, tmp_path):
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    events_topic, records_topic = unique_topic("sip.events"), unique_topic("cdr.records")
    ensure_topics_sync(settings, {events_topic: 6})
    now = clock.now_ms()
    calls = {}
    for i in range(50):
        shape = SHAPES[i % len(SHAPES)]
        calls[f"it-{i:03d}-{shape}@test"] = call_events(shape, f"it-{i:03d}-{shape}@test",
                                                       now + i * 7, scale=0.01)
    silent_events, silent_rows = _silent_call("it-silent@test", now)
    expected = _expected(calls) | silent_rows
    names = list(calls)
    first, second = names[:25], names[25:]

    config = _config(tmp_path, "main", events_topic, records_topic, f"it-cdr-{uuid.uuid4().hex[:8]}")
    worker = Worker(broker.bootstrap, tmp_path / "data", config, 0, tmp_path / "w0.log").start()
    replay = []
    try:
        worker.wait_ready(40)
        # first half, with an undecodable record, an unknown version and in-call duplicates
        batch = []
        for name in first:
            events = calls[name]
            batch += _records(events[:2] + [events[1]] + events[2:])
        batch.append((b"junk@test", b"{not json"))
        future = msgspec.json.encode({**msgspec.to_builtins(calls[first[0]][0]), "v": 2, "call_id": "v2@test"})
        batch.append((b"v2@test", future))
        asyncio.run(produce(settings, events_topic, batch + _records(silent_events)))
        first_expected = _expected({n: calls[n] for n in first})
        got = asyncio.run(_wait_rows(settings, records_topic, first_expected, 30))
        assert first_expected <= set(got)
        # a relayed call's media.stats after its BYE (rtpengine is asked once the
        # dialog is over): its rows come again, with the media
        relayed = calls[first[0]]
        late = CallBuilder(relayed[0].call_id, relayed[-1].ts_ms + 1, from_tag=relayed[0].from_tag,
                           proxy=relayed[0].proxy).at(0).media_stats(
            0, caller=ev.MediaFlow(packets=300, bytes=51_600, last_packet_ms=relayed[-1].ts_ms - 10),
            callee=ev.MediaFlow(packets=290, bytes=49_880, last_packet_ms=relayed[-1].ts_ms - 5))
        calls[first[0]] = relayed + [late]
        with_media = _expected({first[0]: calls[first[0]]})
        assert all(decode_row(v).caller_rtp_packets == 300 for v in with_media)
        expected |= with_media
        asyncio.run(produce(settings, events_topic, _records([late])))
        assert with_media <= set(asyncio.run(_wait_rows(settings, records_topic, with_media, 20)))

        # second half; SIGKILL as soon as its first row is out (before faust
        # commits the offsets, every 2.8 s), then a restart: the state comes
        # back from the changelog and uncommitted events are processed again
        asyncio.run(produce(settings, events_topic, [r for n in second for r in _records(calls[n])]))
        second_expected = _expected({n: calls[n] for n in second})
        asyncio.run(_wait_any(settings, records_topic, second_expected, 20))
        worker.kill()
        worker.start().wait_ready(40)
        # late duplicates of finished calls must not reopen them
        asyncio.run(produce(settings, events_topic, _records(calls[first[3]] + calls[second[-1]][-2:])))
        got = asyncio.run(_wait_rows(settings, records_topic, expected, 40))
        rows = [decode_row(v) for v in got]
        assert set(got) == expected, _diff(expected, set(got))
        # one CDR per call, each with its legs
        by_cdr = {}
        for row in rows:
            by_cdr.setdefault(row.cdr_id, set()).add((row.leg, row.legs))
        assert len(by_cdr) == len(calls) + 1
        assert all({leg for leg, _ in legs} == set(range(next(iter(legs))[1])) for legs in by_cdr.values())
        silent = [r for r in rows if r.call_id == "it-silent@test"]
        assert [(r.hangup_by, r.disposition) for r in silent] == [("silence", "answered")]
        # both skipped and logged when read, before the restart (committed: not read again)
        whole_log = worker.log_path.read_text(errors="replace")
        assert "undecodable" in whole_log and "unknown_version" in whole_log

        # replay the whole topic into a fresh app id, split over two workers
        replay_topic = unique_topic("cdr.records")
        config2 = _config(tmp_path, "replay", events_topic, replay_topic, f"it-replay-{uuid.uuid4().hex[:8]}")
        replay = [Worker(broker.bootstrap, tmp_path / "data2", config2, i, tmp_path / f"r{i}.log").start()
                  for i in range(2)]
        for w in replay:
            w.wait_ready(40)
        again = asyncio.run(_wait_rows(settings, replay_topic, expected, 40))
        assert set(again) == set(got)
        for w in replay:                                  # both got a share of the partitions
            last = w.log_text().rsplit("Setting newly assigned partitions", 1)[-1]
            assert events_topic in last.split("for group", 1)[0]
    finally:
        worker.stop()
        for w in replay:
            w.stop()


def _diff(expected: set[bytes], got: set[bytes]) -> str:
    missing = sorted(decode_row(v).call_id for v in expected - got)
    extra = [(decode_row(v).call_id, decode_row(v).hangup_by) for v in got - expected]
    return f"missing rows of {missing[:10]}, unexpected rows {extra[:10]}"


def test_tansu_end_offsets_see_past_multi_record_batches(broker):
    """Tansu's ListOffsets answers the last batch's base offset + 1; faust's
    changelog recovery reads up to the corrected end instead."""
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    topic = unique_topic("batches")
    ensure_topics_sync(settings, {topic: 1})

    async def scenario():
        producer = AIOKafkaProducer(**producer_kwargs(settings, linger_ms=50))
        await producer.start()
        try:
            for size in (10, 7):
                await asyncio.gather(*[await producer.send(topic, b"x", key=b"k") for _ in range(size)])
        finally:
            await producer.stop()
        tp = TopicPartition(topic, 0)
        from aiokafka import AIOKafkaConsumer

        from proxy.infra.kafka import consumer_kwargs
        consumer = AIOKafkaConsumer(**consumer_kwargs(settings))
        await consumer.start()
        try:
            listed = (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()
        return listed, await tansu_end_offsets(settings, {tp: listed})

    listed, corrected = asyncio.run(scenario())
    assert listed <= 17                                   # whatever Tansu says ...
    assert corrected == {TopicPartition(topic, 0): 17}    # ... the end is after the 17th record


def test_faust_app_consumer_gets_the_tansu_fetch_wait(broker):
    tansu = faust_app(f"t-{uuid.uuid4().hex[:6]}", KafkaSettings(bootstrap_servers=broker.bootstrap),
                      autodiscover=False, web_enabled=False)
    kafka = faust_app(f"k-{uuid.uuid4().hex[:6]}", KafkaSettings(bootstrap_servers=broker.bootstrap,
                                                               client_profile="kafka"),
                      autodiscover=False, web_enabled=False)

    async def consumers():
        made = []
        for app in (tansu, kafka):
            thread = app.consumer._new_consumer_thread()
            made.append(thread._create_worker_consumer(app.transport))
        return made

    tansu_consumer, kafka_consumer = asyncio.run(consumers())
    assert tansu_consumer._fetch_max_wait_ms == TANSU_FETCH_MAX_WAIT_MS == 50
    assert kafka_consumer._fetch_max_wait_ms == 1500      # faust's own value on a real cluster
    assert tansu.conf.producer_max_batch_size > 1         # recovery reads true ends: batching is safe
