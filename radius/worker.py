"""The RADIUS accounting worker: ``sip.events`` -> call state -> durable queue -> RADIUS.

* Consumes ``sip.events`` in its own consumer group (``[radius] group_id``,
  default ``sipledger-radius``), in batches.  Each event is folded into its
  call's state with the CDR fold (proxy/contract/callfold.py: idempotent, duplicates by
  event id change nothing); radius/records.py says which records the call
  needs now (Start when answered, Stop / Failed at the end).
* Per batch, in ONE SQLite transaction (radius/queue.py ``Spool.commit``):
  the new records are enqueued (keyed by session + status: a replay cannot
  queue one twice) and the changed call states written.  Only then are the
  batch's offsets committed to Kafka: at-least-once, and a restart resumes
  from the committed offset with the states and the queue as they were.
* A timer (``TICK_S``) sends Interim-Updates of long calls, closes calls that
  went silent (``silence_seconds``: Stop with Acct-Terminate-Cause
  Lost-Service), forgets finished calls after ``finished_ttl_seconds`` and
  prunes acknowledged keys older than ``dedupe_retention_s``.
* The sender (radius/queue.py) delivers the queue with failover.

Several workers may share the consumer group (scale-out on one host): they
share the spool directory (radius/queue.py), where every call state and
queued record carries its ``sip.events`` partition.  A worker holds in
memory, folds and sends only the partitions Kafka assigned it:

* revoked: its in-flight sends finish and their acknowledgements are
  committed, then the partitions' calls and queue leave its memory;
* assigned: it claims the partitions in the spool (``owners``, the fence),
  loads their call states and queued records, and carries on from the
  group's committed offsets.  A batch whose offsets did not get committed
  before the rebalance comes again to the new owner: the fold ignores known
  event ids and the queue's keys known records, so nothing is doubled.

A worker fenced out (it stalled past its session and its partitions were
claimed meanwhile) stops with an error; its supervisor restarts it and it
joins the group again.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
import uuid
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from pyrad.dictionary import Dictionary

from proxy.contract import events as ev
from proxy.contract.callfold import (
    CallState,
    apply,
    is_call_event,
    live,
    new_state,
    silence_deadline_ms,
    silence_end_ms,
)
from proxy.infra import metrics
from proxy.infra.config import Config
from proxy.infra.kafka import consumer_kwargs, ensure_topics

from . import dictionary_path
from .queue import Sender, Spool, WireEncoder, wall_ms
from .records import Context, Progress, Record, context_for, interim, plan

log = logging.getLogger("radius.worker")

TICK_S = 0.5
PRUNE_EVERY_S = 60.0
STATS_EVERY_S = 30.0


class Slot(msgspec.Struct, frozen=True, array_like=True):
    """A call as the worker keeps it: live (``state``) or finished (``state`` None,
    kept ``finished_ttl_seconds`` so late duplicates cannot reopen it)."""
    partition: int
    seen_ms: int                     # wall clock of the last change
    state: CallState | None
    progress: Progress


_slot_encoder = msgspec.msgpack.Encoder()
_slot_decoder = msgspec.msgpack.Decoder(Slot)


class Accounting:
    """The core: live calls and finished markers in memory, events and ticks
    in, records out.  The caller persists ``changed`` / ``forgotten`` with the
    records (``apply_changes``).  Finished markers are kept apart, in finish
    order, so that the timer only walks live calls and expires markers from
    the oldest.  Only the partitions this worker owns are held (``load`` /
    ``drop`` as Kafka assigns and revokes them)."""

    def __init__(self, ctx: Context, silence_ms: int, ttl_ms: int, started_ms: int) -> None:
        self.ctx = ctx
        self.silence_ms = silence_ms
        self.ttl_ms = ttl_ms
        self.started_ms = started_ms
        self.calls: dict[str, Slot] = {}          # live calls
        self.finished: dict[str, tuple[int, int]] = {}   # call id -> (finish wall ms, partition), oldest first
        self.counts: collections.Counter = collections.Counter()

    def load(self, rows) -> None:
        """Take stored slots (call id, blob) in, beside those held already."""
        markers = [(seen, call_id, partition) for call_id, (seen, partition) in self.finished.items()]
        for call_id, blob in rows:
            slot = _slot_decoder.decode(blob)
            if slot.state is None:
                markers.append((slot.seen_ms, call_id, slot.partition))
            else:
                self.calls[call_id] = slot
        self.finished = {call_id: (seen, partition) for seen, call_id, partition in sorted(markers)}

    def drop(self, partitions: set[int]) -> None:
        """Forget the calls of ``partitions`` (another worker owns them now)."""
        self.calls = {k: v for k, v in self.calls.items() if v.partition not in partitions}
        self.finished = {k: v for k, v in self.finished.items() if v[1] not in partitions}

    def _slot(self, call_id: str, changed: dict[str, Slot]) -> Slot | None:
        slot = changed.get(call_id)
        return self.calls.get(call_id) if slot is None else slot

    def event(self, event: ev.CallEvent, partition: int, now_ms: int,
              records: list[Record], changed: dict[str, Slot]) -> None:
        counts = self.counts
        if not is_call_event(event):             # e.g. registration.dropped: no call state
            counts["not_a_call"] += 1
            return
        call_id = event.call_id
        if call_id in self.finished:
            counts["after_finish"] += 1
            return
        slot = self._slot(call_id, changed)
        if slot is not None and slot.state is None:          # finished in this batch
            counts["after_finish"] += 1
            return
        if slot is None:
            state, progress = new_state(call_id), Progress()
        else:
            state, progress = live(slot.state), slot.progress
            if event.ts_ms > silence_deadline_ms(state, self.silence_ms):
                # silent before this event: closed as the timer would have done
                self._close_silent(call_id, slot, now_ms, records, changed)
                counts["after_finish"] += 1
                return
        new = apply(state, event)
        if new is state and slot is not None:
            counts["no_change"] += 1
            return
        out, progress = plan(new, progress, self.ctx)
        records.extend(out)
        counts["records"] += len(out)
        if progress.final:
            counts["calls"] += 1
            changed[call_id] = Slot(partition, now_ms, None, progress)
        else:
            changed[call_id] = Slot(partition, now_ms, new, progress)

    def _close_silent(self, call_id: str, slot: Slot, now_ms: int, records: list[Record],
                      changed: dict[str, Slot]) -> None:
        out, progress = plan(live(slot.state), slot.progress, self.ctx,
                             silence_end_ms=silence_end_ms(live(slot.state), self.silence_ms))
        records.extend(out)
        self.counts["records"] += len(out)
        self.counts["silence_closes"] += 1
        changed[call_id] = Slot(slot.partition, now_ms, None, progress)

    def tick(self, now_ms: int, records: list[Record], changed: dict[str, Slot],
             forgotten: list[str]) -> None:
        """Interim-Updates due, silent calls, expired finished markers."""
        for call_id, (finished_ms, _partition) in self.finished.items():
            if now_ms - finished_ms <= self.ttl_ms:
                break
            forgotten.append(call_id)
        for call_id, slot in self.calls.items():
            state = live(slot.state)                   # self.calls holds live calls only
            quiet_since = max(slot.seen_ms, self.started_ms)
            if now_ms - quiet_since > self.silence_ms \
                    and now_ms > silence_deadline_ms(state, self.silence_ms):
                self._close_silent(call_id, slot, now_ms, records, changed)
                continue
            if self.ctx.interim_ms:
                out, progress = interim(state, slot.progress, self.ctx, now_ms)
                if out:
                    records.extend(out)
                    self.counts["interims"] += len(out)
                    changed[call_id] = msgspec.structs.replace(slot, progress=progress)

    def apply_changes(self, changed: dict[str, Slot],
                      forgotten: list[str]) -> tuple[dict[str, bytes], list[str]]:
        """Take the changes into memory; returns what to write to the spool."""
        calls, finished = self.calls, self.finished
        for call_id, slot in changed.items():
            if slot.state is None:
                calls.pop(call_id, None)
                finished[call_id] = (slot.seen_ms, slot.partition)
            else:
                calls[call_id] = slot
        for call_id in forgotten:
            finished.pop(call_id, None)
        return {k: _slot_encoder.encode(v) for k, v in changed.items()}, forgotten

    @property
    def live(self) -> int:
        return len(self.calls)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: "RadiusWorker") -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        await self.worker.release({tp.partition for tp in revoked if tp.topic == self.worker.topic})

    async def on_partitions_assigned(self, assigned) -> None:
        await self.worker.take({tp.partition for tp in assigned if tp.topic == self.worker.topic})


class RadiusWorker:
    def __init__(self, config: Config, data_dir: Path) -> None:
        self.config = config
        self.settings = config.radius
        self.data_dir = Path(data_dir)
        self.dictionary = Dictionary(str(dictionary_path(self.settings.dictionary)))
        # records are stored as they go on the wire: encoded once, half the bytes
        self.spool = Spool(self.settings.spool_path(self.data_dir), encode=WireEncoder(self.dictionary).encode)
        self.core = Accounting(context_for(self.settings, config.node.name),
                               silence_ms=int(self.settings.silence_seconds * 1000),
                               ttl_ms=int(self.settings.finished_ttl_seconds * 1000),
                               started_ms=wall_ms())
        self.sender = Sender(self.spool, self.settings, self.dictionary)
        self.consumer: AIOKafkaConsumer | None = None
        self.topic = config.topics.sip_events
        self._stop = asyncio.Event()
        self._last_prune = 0.0
        self._last_stats = time.monotonic()
        self._acked_counted = 0          # the sender's acks already added to the metric
        # this worker in the spool's owner table: unique per run, so that a restarted
        # worker fences its own previous incarnation too
        self.owner = f"{config.node.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.owned: set[int] = set()     # sip.events partitions assigned to this worker

    def stop(self) -> None:
        self._stop.set()

    async def run(self, ready=None) -> None:
        """Run until ``stop()``; ``ready()`` is called once consuming starts."""
        # call states and queued records are loaded per partition as Kafka assigns them
        await self.sender.start()
        await self.sender.assign(())
        sender = asyncio.create_task(self.sender.run(), name="radius-sender")
        tasks = [asyncio.create_task(self._timer(), name="radius-timer")]
        stopper = asyncio.create_task(self._stop.wait())
        try:
            startup = asyncio.create_task(self._start_consumer())
            await asyncio.wait([startup, stopper], return_when=asyncio.FIRST_COMPLETED)
            if not startup.done():                  # stopped while starting
                startup.cancel()
                await asyncio.wait([startup])
                return
            startup.result()
            tasks.append(asyncio.create_task(self._consume(), name="radius-consume"))
            if ready is not None:
                ready()
            done, _ = await asyncio.wait(tasks + [sender, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and (failure := task.exception()) is not None:
                    raise failure
        finally:
            stopper.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            await self.sender.close()
            sender.cancel()
            await asyncio.wait([sender])
            try:
                if self.consumer is not None:
                    await self.consumer.stop()
            finally:
                self.spool.close()

    # --- consuming ---------------------------------------------------------------------
    async def _start_consumer(self) -> None:
        kafka = self.config.kafka
        await ensure_topics(kafka, {self.topic: kafka.partitions}, timeout=30.0)
        consumer = AIOKafkaConsumer(
            **consumer_kwargs(kafka, group_id=self.settings.group_id,
                              enable_auto_commit=False, auto_offset_reset="earliest",
                              client_id=f"{self.settings.group_id}-{self.config.node.name}",
                              max_partition_fetch_bytes=4 * 1048576))
        self.consumer = consumer
        await consumer.start()
        consumer.subscribe([self.topic], listener=_Rebalance(self))

    async def release(self, partitions: set[int]) -> None:
        """Kafka revoked ``partitions``: finish their sends, forget their calls."""
        if not partitions:
            return
        self.owned -= partitions
        self.core.drop(partitions)
        await self.sender.assign(self.owned)
        log.info("radius worker: released partitions %s", sorted(partitions))

    async def take(self, partitions: set[int]) -> None:
        """Kafka assigned ``partitions``: claim them, load their calls and queue."""
        new = partitions - self.owned
        if new:
            self.spool.claim(new, self.owner)
            self.core.load(self.spool.calls(new))
            self.owned |= new
        await self.sender.assign(self.owned)
        log.info("radius worker: partitions %s (%d live calls, %d records in memory)",
                 sorted(self.owned), self.core.live, self.sender.backlog)

    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None, "_start_consumer() comes first"
        batch_size = self.settings.batch_size
        while True:
            data = await consumer.getmany(timeout_ms=500, max_records=batch_size)
            # records of a partition revoked meanwhile are its new owner's to fold
            data = {tp: messages for tp, messages in data.items() if messages and tp.partition in self.owned}
            if not data:
                continue
            offsets = {tp: messages[-1].offset + 1 for tp, messages in data.items()}
            self.handle(data)
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:
                # the events come again after the rebalance: folding and the
                # queue's keys make that harmless
                log.warning("offset commit failed (%s): the batch will be replayed", exc)

    def handle(self, data: dict[TopicPartition, list]) -> None:
        """Fold a fetched batch, enqueue its records and states durably."""
        now = wall_ms()
        records: list[Record] = []
        changed: dict[str, Slot] = {}
        counts = self.core.counts
        for tp, messages in data.items():
            for message in messages:
                try:
                    event = ev.read(message.value)
                except ev.Unreadable as exc:
                    counts[exc.reason] += 1
                    log.warning("skipping record %s[%d]@%d: %s", tp.topic, tp.partition,
                                message.offset, exc)
                    continue
                counts["events"] += 1
                self.core.event(event, tp.partition, now, records, changed)
        self._persist(records, changed, [], now)

    def _persist(self, records: list[Record], changed: dict[str, Slot], forgotten: list[str],
                 now: int) -> None:
        if not records and not changed and not forgotten:
            return
        # every record comes from a call changed in the same batch
        call_partitions = {call_id: slot.partition for call_id, slot in changed.items()}
        puts, deletes = self.core.apply_changes(changed, forgotten)
        # raises Fenced (nothing written, nothing committed to Kafka): the worker stops
        added = self.spool.commit(records, puts, deletes, now_ms=now,
                                  partitions=[call_partitions[record.call_id] for record in records],
                                  owner=self.owner, call_partitions=call_partitions)
        self.core.counts["duplicates_skipped"] += len(records) - len(added)
        self.sender.add(added)

    # --- the timer ---------------------------------------------------------------------
    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = wall_ms()
            records: list[Record] = []
            changed: dict[str, Slot] = {}
            forgotten: list[str] = []
            self.core.tick(now, records, changed, forgotten)
            self._persist(records, changed, forgotten, now)
            metrics.gauge("radius_queue_depth", self.spool.pending_count())
            acked = self.sender.counts["acked"]
            metrics.count("radius_sent", acked - self._acked_counted)
            self._acked_counted = acked
            if self.consumer is not None:
                metrics.set_lag("radius", await metrics.aiokafka_lag(self.consumer))
            mono = time.monotonic()
            if mono - self._last_prune > PRUNE_EVERY_S:
                self._last_prune = mono
                self.spool.prune_sent(now - int(self.settings.dedupe_retention_s * 1000))
            if mono - self._last_stats > STATS_EVERY_S:
                self._last_stats = mono
                log.info("radius stats: live=%d queued=%d %s %s", self.core.live, self.spool.pending_count(),
                         " ".join(f"{k}={v}" for k, v in sorted(self.core.counts.items())),
                         " ".join(f"{k}={v}" for k, v in sorted(self.sender.counts.items())))
