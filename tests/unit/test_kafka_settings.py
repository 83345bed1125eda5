"""Client settings derived from KafkaSettings (the broker quirks live in one place)."""
from __future__ import annotations

import ssl

import pytest
from aiokafka import AIOKafkaProducer

from proxy.infra.config import ConfigError, KafkaSettings
from proxy.infra.kafka import consumer_kwargs, faust_app, faust_settings, producer_kwargs

TANSU = KafkaSettings(bootstrap_servers="127.0.0.1:9092")
KAFKA = KafkaSettings(bootstrap_servers="k1:9092,k2:9092", client_profile="kafka", mode="external",
                      replication_factor=3)


def test_producer_lingers_briefly_and_waits_for_every_replica():
    for settings in (TANSU, KAFKA):
        kwargs = producer_kwargs(settings)
        assert kwargs["acks"] == "all"
        assert kwargs["linger_ms"] == 5
        assert kwargs["compression_type"] is None
    assert producer_kwargs(TANSU)["bootstrap_servers"] == "127.0.0.1:9092"
    assert producer_kwargs(TANSU, linger_ms=0)["linger_ms"] == 0


async def test_producer_idempotent_on_kafka_only():
    """Tansu refuses idempotent producers; a real cluster gets them (acks=all, one write per retried send)."""
    assert producer_kwargs(TANSU)["enable_idempotence"] is False
    assert producer_kwargs(KAFKA)["enable_idempotence"] is True
    for settings, idempotent in ((TANSU, False), (KAFKA, True)):
        producer = AIOKafkaProducer(**producer_kwargs(settings))      # aiokafka checks the combination here
        try:
            assert (producer._txn_manager is not None) is idempotent
            assert producer._sender._acks == -1
        finally:
            await producer.stop()


async def test_faust_producer_idempotent_on_kafka_only():
    for settings, idempotent in ((TANSU, False), (KAFKA, True)):
        app = faust_app(f"t-{settings.client_profile}", settings, autodiscover=False, web_enabled=False)
        producer = app.producer._new_producer()
        try:
            assert (producer._txn_manager is not None) is idempotent
            assert producer._sender._acks == -1
        finally:
            await producer.stop()


def test_consumer_profiles():
    tansu = consumer_kwargs(TANSU, group_id="g")
    assert (tansu["session_timeout_ms"], tansu["heartbeat_interval_ms"], tansu["fetch_max_wait_ms"]) == (6000, 1000, 50)
    assert tansu["group_id"] == "g"
    kafka = consumer_kwargs(KAFKA)
    assert not {"session_timeout_ms", "heartbeat_interval_ms", "fetch_max_wait_ms"} & set(kafka)
    assert consumer_kwargs(TANSU, fetch_max_wait_ms=20)["fetch_max_wait_ms"] == 20


def test_faust_settings():
    app = faust_settings(TANSU)
    assert app["broker"] == "kafka://127.0.0.1:9092"
    assert (app["broker_session_timeout"], app["broker_heartbeat_interval"], app["producer_max_batch_size"]) == (6, 1, 1)
    kafka = faust_settings(KAFKA)
    assert kafka["broker"] == "kafka://k1:9092;kafka://k2:9092"
    assert not {"producer_max_batch_size", "broker_session_timeout", "broker_heartbeat_interval"} & set(kafka)
    assert (app["producer_acks"], kafka["producer_acks"]) == (-1, -1)
    # faust's changelog topics: replicated like ours (else min.insync.replicas refuses them)
    assert (app["topic_replication_factor"], kafka["topic_replication_factor"]) == (1, 3)


def test_sasl_ssl_settings():
    secure = KafkaSettings(bootstrap_servers="k:9093", security_protocol="SASL_SSL",
                           sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password="p")
    kwargs = consumer_kwargs(secure)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("SCRAM-SHA-256", "u", "p")
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert "ssl_context" not in producer_kwargs(TANSU) and "sasl_mechanism" not in producer_kwargs(TANSU)


def test_empty_bootstrap_is_a_config_error():
    with pytest.raises(ConfigError, match="bootstrap_servers"):
        producer_kwargs(KafkaSettings())
