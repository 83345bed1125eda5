"""Helpers for tests that talk to the real embedded broker (Tansu).

Each test that reads a topic back gets its own topic (``unique_topic``) on the
session broker, so tests never see each other's records.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from api.broker import EmbeddedBroker
from proxy.infra.config import KafkaSettings, TopicSettings
from proxy.infra.kafka import consumer_kwargs, ensure_topics_sync, producer_kwargs, topic_partitions
from tests.harness.poll import aeventually


def settings_for(broker: EmbeddedBroker, **overrides) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap, **overrides)


def standard_topics(settings: KafkaSettings) -> dict[str, int]:
    topics = TopicSettings()
    return {topics.sip_events: settings.partitions, topics.call_control: settings.partitions}


def start_broker(log_dir: Path) -> EmbeddedBroker:
    """A started broker with sip.events and call.control created."""
    broker = EmbeddedBroker(log_path=log_dir / "tansu.log").start()
    try:
        create_standard_topics(broker)
    except BaseException:
        broker.stop()
        raise
    return broker


def create_standard_topics(broker: EmbeddedBroker) -> None:
    settings = settings_for(broker)
    ensure_topics_sync(settings, standard_topics(settings))


def unique_topic(prefix: str = "test") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


async def produce(settings: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) records and wait until the broker has them all."""
    producer = AIOKafkaProducer(**producer_kwargs(settings))
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(settings: KafkaSettings, topic: str, *, at_least: int,
                   timeout: float = 20.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, once at least ``at_least``
    have arrived and each partition is read up to its high watermark (as the
    fetches report it: Tansu's ListOffsets end is wrong after batches).
    Returns what it has when ``timeout`` runs out, so the caller's assertion
    says what is missing."""
    partitions = await topic_partitions(settings, topic)
    assert partitions, f"topic {topic} does not exist"
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = AIOKafkaConsumer(**consumer_kwargs(settings, enable_auto_commit=False))
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def read_to_the_end() -> bool:
            batch = await consumer.getmany(timeout_ms=200)       # waits up to 200 ms for records
            for tp_records in batch.values():
                records.extend(tp_records)
            return len(records) >= at_least and not batch and await _caught_up(consumer, tps)

        await aeventually(read_to_the_end, timeout=timeout, interval=0, fail=False)
    finally:
        await consumer.stop()
    return records


async def _caught_up(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        highwater = consumer.highwater(tp)
        if highwater is not None and await consumer.position(tp) < highwater:
            return False
    return True
