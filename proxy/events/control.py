"""Reads `call.control` commands (teardown, set_max_duration) for one proxy worker.

Every worker reads every partition (manual assignment, no consumer group): a
command's call can live on any worker, and the handler ignores calls it does
not hold.  Nothing is committed: positions live in this object.

Where reading starts:
* first start: at the end; commands issued before this worker started are
  skipped.  Tansu's end offset can be low after a multi-record batch, so the
  last batch is read and dropped by timestamp rather than trusted.
* after any reconnect: where we stopped, once the record just before that
  position is confirmed to be the one we read last.  If it is not, the topic
  was recreated (an embedded broker loses every topic on restart) and the new
  topic is read from its beginning.
* on the embedded broker (profile "tansu") aiokafka would carry on at the old
  offsets across a broker restart and skip the recreated topic's first
  records, so an idle TCP connection to the broker watches for its exit and
  the consumer is rebuilt as soon as it drops.

The handler is a plain function called in the event loop; it must not block.
Undecodable messages and handler errors are logged and skipped.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from proxy.contract import commands
from proxy.contract.commands import ControlCommand
from proxy.infra.config import KafkaSettings
from proxy.infra.kafka import bootstrap_servers, consumer_kwargs, topic_partitions

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_MS = 5000


class _BrokerGone(Exception):
    """The watched broker connection closed: the broker restarted or went away."""


class _Partition:
    """Where one partition is read from, and how to recognise it again."""
    __slots__ = ("position", "last_seen", "verify", "skip_before_ms")

    def __init__(self) -> None:
        self.position: int | None = None    # next offset to hand to the handler
        self.last_seen: tuple | None = None  # fingerprint of the record at position - 1
        self.verify = False                 # next record must be the one at position - 1
        self.skip_before_ms: int | None = None


def _fingerprint(record: Any) -> tuple:
    return (record.timestamp, record.key, record.value)


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        # aiokafka 0.14's fetcher.close() re-raises the CancelledError of its
        # own fetch task when the broker went away; only ours must propagate.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception as exc:
        log.debug("closing the consumer: %r", exc)


class ControlConsumer:
    def __init__(self, kafka_settings: KafkaSettings, topic: str,
                 handler: Callable[[ControlCommand], None], *,
                 backoff_initial: float = 0.2, backoff_max: float = 2.0) -> None:
        self.kafka_settings = kafka_settings
        self.topic = topic
        self.handler = handler
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # Counters for metrics.
        self.received = 0
        self.undecodable = 0
        self.handler_errors = 0
        self.reconnects = 0
        # Set while partitions are assigned and positioned: a test can produce after it.
        self.ready = asyncio.Event()
        self._partitions: dict[int, _Partition] = {}
        self._started_ms = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            # Compared with Kafka record timestamps, which the producing client
            # (or the broker) stamps from the host's clock: so the host's clock
            # here too, not proxy.infra.clock (shifted, it would skip every command).
            self._started_ms = time.time_ns() // 1_000_000
            self._task = asyncio.get_running_loop().create_task(self._run(), name="control-consumer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = self.backoff_initial
        while True:
            consumer = AIOKafkaConsumer(**consumer_kwargs(
                self.kafka_settings, group_id=None, enable_auto_commit=False,
                # out of range only when the topic shrank: it was recreated
                auto_offset_reset="earliest", request_timeout_ms=REQUEST_TIMEOUT_MS))
            broker_gone: asyncio.Task | None = None
            try:
                await consumer.start()
                broker_gone = await self._watch_broker()
                await self._assign(consumer)
                self.ready.set()
                backoff = self.backoff_initial
                await self._consume(consumer, broker_gone)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s consumer: %r; reconnecting in %.1fs", self.topic, exc, backoff)
            finally:
                self.ready.clear()
                if broker_gone is not None:
                    broker_gone.cancel()
                await _stop_quietly(consumer)
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _watch_broker(self) -> asyncio.Task | None:
        """On the embedded broker: a task that finishes when the broker's TCP
        connection drops (it never sends on a connection that asks nothing)."""
        if self.kafka_settings.client_profile != "tansu":
            return None
        host, _, port = bootstrap_servers(self.kafka_settings).split(",")[0].strip().rpartition(":")
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))

        async def wait_for_close() -> None:
            try:
                await reader.read()
            except OSError:
                pass  # reset rather than closed: gone all the same
            finally:
                writer.close()

        return asyncio.get_running_loop().create_task(wait_for_close())

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        count = await topic_partitions(self.kafka_settings, self.topic)
        if count is None:
            raise LookupError(f"topic {self.topic} does not exist (yet)")
        first_start = not self._partitions
        tps = [TopicPartition(self.topic, p) for p in range(count)]
        consumer.assign(tps)
        if first_start:
            ends = await consumer.end_offsets(tps)
        for tp in tps:
            state = self._partitions.setdefault(tp.partition, _Partition())
            if first_start:
                state.position = ends[tp]
                state.skip_before_ms = self._started_ms
            elif state.position is None:  # a partition the topic did not have
                state.position = 0
            # Re-read the record before our position to confirm it is the same
            # topic; at first start this also learns what that record is.
            state.verify = state.position > 0
            consumer.seek(tp, state.position - 1 if state.verify else state.position)
        for gone in set(self._partitions) - {tp.partition for tp in tps}:
            del self._partitions[gone]

    async def _consume(self, consumer: AIOKafkaConsumer, broker_gone: asyncio.Task | None) -> None:
        while True:
            fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=1000))
            waiting = {fetch} if broker_gone is None else {fetch, broker_gone}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if fetch.done():
                # Fetched before any restart was noticed: from the old broker.
                for tp, records in fetch.result().items():
                    self._dispatch(consumer, tp, records)
                self._check_unverifiable(consumer)
            else:
                fetch.cancel()
            if broker_gone is not None and broker_gone.done():
                raise _BrokerGone(f"connection to {bootstrap_servers(self.kafka_settings)} closed")

    def _dispatch(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list) -> None:
        state = self._partitions[tp.partition]
        for record in records:
            if state.verify:
                state.verify = False
                if state.position is not None and record.offset == state.position - 1 and state.last_seen in (None, _fingerprint(record)):
                    state.last_seen = _fingerprint(record)
                    continue
                self._read_from_start(consumer, tp, state)
                return  # the rest of this fetch belongs to the old position
            state.position = record.offset + 1
            state.last_seen = _fingerprint(record)
            if state.skip_before_ms is not None:
                if record.timestamp < state.skip_before_ms:
                    continue  # issued before this worker started
                state.skip_before_ms = None
            self._handle(tp, record)

    def _check_unverifiable(self, consumer: AIOKafkaConsumer) -> None:
        """A partition that now ends before the record we last read was
        recreated: that record will never come to be checked."""
        for partition, state in self._partitions.items():
            if state.verify:
                tp = TopicPartition(self.topic, partition)
                highwater = consumer.highwater(tp)  # from fetches: right on Tansu
                if highwater is not None and highwater < state.position:
                    self._read_from_start(consumer, tp, state)

    def _read_from_start(self, consumer: AIOKafkaConsumer, tp: TopicPartition, state: _Partition) -> None:
        log.info("%s[%d] was recreated: reading it from the beginning", self.topic, tp.partition)
        state.position, state.last_seen, state.skip_before_ms, state.verify = 0, None, None, False
        consumer.seek(tp, 0)

    def _handle(self, tp: TopicPartition, record: Any) -> None:
        try:
            command = commands.decode(record.value)
        except (msgspec.DecodeError, TypeError) as exc:
            self.undecodable += 1
            log.warning("%s[%d]@%d: undecodable command skipped: %s: %r",
                        self.topic, tp.partition, record.offset, exc, (record.value or b"")[:200])
            return
        self.received += 1
        try:
            self.handler(command)
        except Exception:
            self.handler_errors += 1
            log.exception("%s[%d]@%d: handler failed for %s %s", self.topic, tp.partition,
                          record.offset, type(command).__name__, command.id)
