"""Topic creation on the embedded broker, and the broker process itself."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from proxy.infra.config import KafkaSettings
from proxy.infra.kafka import ensure_topics, ensure_topics_sync, producer_kwargs, topic_partitions
from tests.harness.broker import settings_for, unique_topic
from tests.harness.proxy import free_tcp_port

pytestmark = pytest.mark.integration


async def test_ensure_topics_is_idempotent_and_keeps_counts(kafka_settings):
    first, second = unique_topic(), unique_topic()
    assert await ensure_topics(kafka_settings, {first: 6, second: 2}) == {first: 6, second: 2}
    # Exists already: fine, and its count is reported as it is.
    assert await ensure_topics(kafka_settings, {first: 3}) == {first: 6}


def test_ensure_topics_sync_creates_with_counts_and_is_idempotent(kafka_settings):
    """The synchronous twin (kafka-python's KafkaAdminClient) that `up` uses."""
    first, second = unique_topic("sync"), unique_topic("sync")
    assert ensure_topics_sync(kafka_settings, {first: 6, second: 2}) == {first: 6, second: 2}
    assert ensure_topics_sync(kafka_settings, {first: 3, second: 2}) == {first: 6, second: 2}
    # what the async clients see
    assert asyncio.run(topic_partitions(kafka_settings, first)) == 6


def test_ensure_topics_sync_without_a_broker_raises():
    nobody = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_tcp_port()}")
    with pytest.raises(Exception, match="bootstrap|connect|broker"):
        ensure_topics_sync(nobody, {unique_topic(): 1}, timeout=1.0)


async def test_clients_never_auto_create_topics(kafka_settings):
    """aiokafka asks for auto-creation and Tansu would create 4 partitions;
    proxy.contract.kafka turns that off (this guards the aiokafka pin)."""
    missing = unique_topic("missing")
    producer = AIOKafkaProducer(**producer_kwargs(kafka_settings, request_timeout_ms=500))
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await producer.send_and_wait(missing, b"value", key=b"key")
    finally:
        await producer.stop()
    assert await topic_partitions(kafka_settings, missing) is None


async def test_restart_keeps_the_port_and_loses_the_topics(fresh_broker):
    settings = settings_for(fresh_broker)
    port, pid = fresh_broker.port, fresh_broker.pid
    await asyncio.to_thread(fresh_broker.restart)
    assert fresh_broker.port == port and fresh_broker.pid != pid and fresh_broker.running
    assert await topic_partitions(settings, "sip.events") is None


def test_stop_ends_the_process(fresh_broker):
    process = fresh_broker._process
    fresh_broker.stop()
    assert process.poll() is not None and not fresh_broker.running
    fresh_broker.stop()  # twice is fine


def test_init_topics_job_creates_every_topic_of_up_with_its_partitions(broker, tmp_path):
    """`sipledger kafka init-topics`, the compose init job, configured through the environment
    as its container is (SIPLEDGER__SECTION__KEY): every topic `up` makes, then idempotent."""
    from typer.testing import CliRunner

    from api.cli import app
    keys = ["TOPICS__SIP_EVENTS", "TOPICS__CALL_CONTROL", "CDR__RECORDS_TOPIC", "LEDGER__EVENTS_TOPIC",
            "LEDGER__CALLS_TOPIC", "LEDGER__NOTIFICATIONS_TOPIC", "TRACE__TOPIC"]
    names = {key: unique_topic("init") for key in keys}
    env = {f"SIPLEDGER__{key}": name for key, name in names.items()}
    env |= {"SIPLEDGER__KAFKA__MODE": "external", "SIPLEDGER__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "SIPLEDGER__KAFKA__PARTITIONS": "3"}
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["--data-dir", str(tmp_path), "kafka", "init-topics"], env=env)
        assert result.exit_code == 0, result.output
        assert sorted(result.output.splitlines()) == sorted(f"{name} partitions=3 replication=1"
                                                            for name in names.values())
    settings = settings_for(broker)
    assert {name: asyncio.run(topic_partitions(settings, name)) for name in names.values()} == \
        {name: 3 for name in names.values()}
    bad = runner.invoke(app, ["--data-dir", str(tmp_path), "kafka", "init-topics"],
                        env=env | {"SIPLEDGER__KAFKA__PARTITION": "3"})
    assert bad.exit_code == 2
    assert bad.output.strip() == "error: environment SIPLEDGER__KAFKA__PARTITION: unknown key 'kafka.partition'"
