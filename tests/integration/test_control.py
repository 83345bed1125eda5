"""ControlConsumer against the real broker: commands in, garbage skipped, restarts survived."""
from __future__ import annotations

import asyncio

import pytest

from proxy.contract import commands
from proxy.contract.events import new_event_id
from proxy.events.control import ControlConsumer
from proxy.infra.clock import now_ms
from proxy.infra.kafka import ensure_topics
from tests.harness.broker import produce, settings_for, standard_topics, unique_topic
from tests.harness.poll import aeventually

# Commands issued before a worker started are skipped by their Kafka timestamp
# (the host's clock), whatever the project's clock says: also run a year ahead.
pytestmark = [pytest.mark.integration, pytest.mark.clock]


def teardown(call_id: str) -> commands.Teardown:
    return commands.Teardown(id=new_event_id(), ts_ms=now_ms(), call_id=call_id,
                             issued_by="billing", reason="credit exhausted", sip_cause=402)


def set_max_duration(call_id: str, seconds: int) -> commands.SetMaxDuration:
    return commands.SetMaxDuration(id=new_event_id(), ts_ms=now_ms(), call_id=call_id, seconds=seconds)


def record(command: commands.ControlCommand) -> tuple[bytes, bytes]:
    return command.call_id.encode(), commands.encode(command)


async def started(consumer: ControlConsumer) -> ControlConsumer:
    consumer.start()
    await asyncio.wait_for(consumer.ready.wait(), 20)
    return consumer


async def test_commands_reach_the_handler_and_garbage_is_skipped(kafka_settings):
    topic = unique_topic("control")
    await ensure_topics(kafka_settings, {topic: 3})
    # Issued before the worker starts (in one batch: Tansu's end offset is
    # then wrong): not for this worker.
    await produce(kafka_settings, topic, [record(teardown(f"old-{i}")) for i in range(20)])
    received: list[commands.ControlCommand] = []
    consumer = await started(ControlConsumer(kafka_settings, topic, received.append))
    try:
        expected = [teardown("call-a"), set_max_duration("call-b", 90)]
        await produce(kafka_settings, topic, [record(expected[0]), (b"call-c", b"\x00not a command{"),
                                              (b"call-d", b'{"type":"reboot","id":"x"}'),
                                              record(expected[1])])
        await aeventually(lambda: len(received) >= 2 and consumer.undecodable >= 2, "two commands, two skipped")
    finally:
        await consumer.stop()
    assert sorted(received, key=lambda c: c.call_id) == expected
    assert consumer.undecodable == 2


async def test_a_failing_handler_does_not_stop_the_consumer(kafka_settings):
    topic = unique_topic("control")
    await ensure_topics(kafka_settings, {topic: 1})
    handled = []

    def handler(command):
        if command.call_id == "explodes":
            raise RuntimeError("handler bug")
        handled.append(command)

    consumer = await started(ControlConsumer(kafka_settings, topic, handler))
    try:
        after = teardown("fine")
        await produce(kafka_settings, topic, [record(teardown("explodes")), record(after)])
        await aeventually(lambda: handled, "the command after the failing one")
    finally:
        await consumer.stop()
    assert handled == [after] and consumer.handler_errors == 1


async def test_survives_a_broker_restart_without_skipping_or_repeating(fresh_broker):
    settings = settings_for(fresh_broker)
    topic = "call.control"
    received: list[commands.ControlCommand] = []
    consumer = await started(ControlConsumer(settings, topic, received.append))
    try:
        # Several commands on one partition: the old position is past the
        # start of the recreated topic.
        before = [teardown("same-call") for _ in range(3)]
        await produce(settings, topic, [record(c) for c in before])
        await aeventually(lambda: len(received) == 3, "commands before the restart")

        await asyncio.to_thread(fresh_broker.restart)
        await ensure_topics(settings, standard_topics(settings))
        after = [set_max_duration("same-call", 60), teardown("same-call"), teardown("other-call")]
        await produce(settings, topic, [record(c) for c in after])
        await aeventually(lambda: len(received) >= 6, "commands after the restart")
        await asyncio.wait_for(consumer.ready.wait(), 20)
    finally:
        await consumer.stop()
    assert received[:3] == before
    assert sorted(received[3:], key=lambda c: c.id) == sorted(after, key=lambda c: c.id)
    assert len(received) == 6
