"""The CDR processor: a faust-streaming app that joins ``sip.events`` into CDR rows.

* ``sip.events`` (raw bytes) is read a whole fetch at a time (cdr/drain.py:
  faust's consumer handing the records to ``handle_messages`` without faust's
  per-record stream machinery; the agent on the topic is the fallback path,
  ``stream.take_events``), decoded with the contract (msgspec; undecodable or
  unknown-version records are logged, counted and skipped) and each event
  folded into its call's ``CallState`` (proxy/contract/callfold.py), in
  partition order.
* State lives in a changelog-backed faust Table ``calls``: Call-ID -> ``Slot``
  (msgpack via msgspec, codec ``cdr_slot``).  Values are replaced, never
  mutated.  Writes name their changelog partition explicitly (the Call-ID's
  partition of ``sip.events``) instead of taking it from "the current event":
  a batch holds events of several partitions, and the silence timer writes
  outside any event.  The store changes at once; the changelog gets a key's
  newest value once per commit (``flush_changelog``, called by the consumer
  before it commits offsets), not once per event: a call folded over many
  batches costs one or two changelog records.
* A call that is over yields its rows (``finish``), published to
  ``cdr.records`` (key = cdr_id, JSON) by a producer of its own that batches
  records (faust's producer sends one record per batch on Tansu, see
  proxy/infra/kafka.py).  Its slot keeps the final state
  (``done``) until the broker has confirmed every row, then shrinks to a small
  *finished marker* kept ``finished_ttl_seconds`` so that late duplicates
  cannot reopen the call; the timer deletes expired markers (tombstones).
* Media statistics come late: rtpengine is asked for them once the dialog is
  over, so a relayed call's ``media.stats`` usually follows the event that
  ended it.  An answered call's final state is therefore kept for
  ``MEDIA_GRACE_MS`` after its rows were confirmed (``confirmed``); a
  ``media.stats`` within that time is folded in and the call's rows are
  published again, with the media (the sink keeps the newest copy; billing
  debits a leg once, by its id).  Later ones are counted (``media_too_late``)
  and dropped.
* The timer closes calls that went silent (``[cdr] silence_seconds``) with
  hangup_by "silence" and an end time derived from the events, and sends again
  the rows of finished calls never confirmed (a crash, a restart).

Delivery.  Input is at-least-once.  A batch's table writes (live states, and
the final states of the calls it finished) are handed to faust's producer
before the offsets of its events are committed (``flush_changelog`` under the
lock, once the offsets to commit are chosen), and faust flushes its producer
before it commits offsets: a committed event's effect is in the changelog.  Rows are
sent without blocking the agent; a finished slot only becomes a marker after
its rows are confirmed.  A crash anywhere either replays events (the fold is
idempotent) or leaves final states whose rows the timer sends again; rows are
a function of the events, so the topic can only get byte-identical
duplicates (the sink is idempotent), or a call's rows again with its late
media statistics (a newer copy of the same legs), never lose a CDR.

Determinism.  Whether an event arrives before or after a silence close must not
depend on timing: an event more than the silence window (in event time) after
its call's last one first closes the call for silence and is then dropped, as
the timer would have done.  The timer itself needs the wall clock to be past
the call's silence deadline *and* the slot to have been quiet for the window in
real time since this worker took its partition (no closes while catching up).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import msgspec

from proxy.contract import events as ev
from proxy.contract.callfold import CallState, is_call_event, silence_deadline_ms, silence_end_ms
from proxy.contract.cdr import CdrLeg
from proxy.infra import clock, metrics
from proxy.infra.config import Config
from proxy.infra.kafka import faust_app, producer_kwargs

from . import fold
from .drain import PartitionBatcher, partition_for, queue_batches, use_batch_consumer

log = logging.getLogger("cdr.processor")

TABLE_NAME = "calls"
RESEND_AFTER_MS = 10_000            # a finished call's rows unconfirmed this long are sent again
# an answered call's final state is kept this long after its rows were confirmed, for
# a media.stats that follows the end (rtpengine's query: 3 tries of 1 s by default)
MEDIA_GRACE_MS = 10_000
SCAN_CHUNK = 5000                   # the timer's scan yields to the agent this often
# The timer scans the slots that can still need it (live calls, finished calls
# holding their state: ``_open``) every tick, and the whole table, finished
# markers included, every FULL_SCAN_TICKS ticks and after partitions are
# assigned.  Markers are most of the table (calls/s x finished_ttl_seconds:
# 3M at 5,000 calls/s and 600 s); scanned every 5 s they cost ~0.5 us each,
# 58 us per call at steady state, more than the rest of the processor.
# They now expire up to FULL_SCAN_TICKS timer ticks after their TTL.
FULL_SCAN_TICKS = 12
SLOT_CODEC = "cdr_slot"
CHANGELOG_BATCH_BYTES = 1 << 19     # faust's producer: below its 1 MB max request


class Slot(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A table value.  Live call: ``done`` False, its state.  Finished call:
    ``done`` True and the final state until its rows are confirmed by the
    broker, then only the marker (``state`` None) until it expires.
    ``gc=False`` as the states it holds (proxy/contract/callfold.py): no cycles,
    and a table of them is not walked by the garbage collector."""
    partition: int                  # the Call-ID's partition of sip.events = changelog partition
    seen_ms: int                    # wall clock of the last change
    state: CallState | None = None
    done: bool = False
    close_ms: int = 0               # a silence close: the end time given to finish()
    confirmed: bool = False         # finished, rows confirmed, state kept for late media.stats


def after_confirm(slot: Slot, now_ms: int) -> Slot:
    """What a finished slot becomes once its rows are confirmed: an answered
    call keeps its final state for late media.stats, any other a marker
    (``fold.kept_after_end``)."""
    kept = fold.kept_after_end(slot.state)
    if kept is not None:
        return Slot(slot.partition, now_ms, kept, True, slot.close_ms, confirmed=True)
    return Slot(slot.partition, now_ms, None, True)


def media_grace_over(slot: Slot, now_ms: int) -> bool:
    """A confirmed slot whose state can shrink to a marker now."""
    return slot.confirmed and slot.state is not None and now_ms - slot.seen_ms > MEDIA_GRACE_MS


_slot_encoder = msgspec.msgpack.Encoder()
_slot_decoder = msgspec.msgpack.Decoder(Slot)
_row_encoder = msgspec.json.Encoder()


def encode_row(row: CdrLeg) -> bytes:
    return _row_encoder.encode(row)


def decode_row(data: bytes) -> CdrLeg:
    return msgspec.json.decode(data, type=CdrLeg)


def _register_codec() -> None:
    from faust.serializers import codecs

    class SlotCodec(codecs.Codec):
        def _dumps(self, obj: Any) -> bytes:
            return _slot_encoder.encode(obj)

        def _loads(self, s: bytes) -> Any:
            return _slot_decoder.decode(s)

    codecs.register(SLOT_CODEC, SlotCodec())


def _slot_table_class() -> Any:
    import faust

    class SlotTable(faust.Table):
        """Values are Slots in msgpack (codec ``cdr_slot``): faust otherwise
        derives a serializer from the value type, json for anything not bytes,
        and its changelog recovery would decode with that."""

        def _serializer_from_type(self, typ: Any) -> Any:
            return "raw" if typ is bytes else SLOT_CODEC

    return SlotTable


def wall_ms() -> int:
    """The wall clock (proxy.infra.clock): compared with event times (silence deadlines)."""
    return clock.now_ms()


class Stats:
    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))


class CdrProcessor:
    """The agent body and the timer, around one faust app and its table."""

    _metrics_on = False                 # metrics.enabled(), read once per batch
    _ticks = 0                          # timer ticks so far
    _full_scan = True                   # the next tick scans the whole table

    @cached_property
    def _open(self) -> dict[bytes, None]:
        """Keys whose slot holds a state (live, or finished and not yet a
        marker): what the timer scans between full scans."""
        return {}

    @cached_property
    def _unlogged(self) -> dict[bytes, tuple[int, Slot | None]]:
        """Changelog records not sent yet: key -> (partition, its newest slot | None = delete)."""
        return {}

    def __init__(self, app: Any, config: Config, partitions: int) -> None:
        self.app = app
        self.config = config
        self.settings = config.cdr
        self.partitions = partitions
        self.window_ms = config.cdr.silence_ms
        self.ttl_ms = int(config.cdr.finished_ttl_seconds * 1000)
        self.events_topic_name = config.topics.sip_events
        self.events_topic = app.topic(self.events_topic_name, key_type=bytes, value_type=bytes,
                                      key_serializer="raw", value_serializer="raw",
                                      partitions=partitions)
        self.table = app.tables.add(_slot_table_class()(
            app, name=TABLE_NAME, beacon=app.tables.beacon, key_type=bytes, partitions=partitions))
        if self.table.changelog_topic.value_serializer != SLOT_CODEC:
            raise RuntimeError("faust changed: the calls changelog would not decode Slots")
        self.stats = Stats()
        self.assigned_at: dict[int, int] = {}       # partition -> wall ms this worker got it
        self._lock: asyncio.Lock | None = None
        self._confirming: set[asyncio.Future] = set()
        self._rows_producer: PartitionBatcher | None = None
        self._last_stats = 0.0
        self.stats_interval = 30.0
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.agent(self.events_topic, name="cdr-join")(self._agent)
        app.timer(interval=config.cdr.timer_seconds, name="cdr-silence")(self.sweep)
        app.task(self._drop_monitor)

    async def _drop_monitor(self) -> None:
        # faust's Monitor sensor keeps per-event statistics for its web views
        # (off here): ~25% of faust's per-event cost
        self.app.sensors.remove(self.app.monitor)

    @property
    def changelog(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    @property
    def lock(self) -> asyncio.Lock:
        # created on the worker's loop; the agent batch and the timer never interleave
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # --- partitions ----------------------------------------------------------------
    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        now = wall_ms()
        for tp in assigned:
            if tp.topic == self.events_topic_name:
                self.assigned_at[tp.partition] = now
                self._full_scan = True          # its recovered slots are not in _open

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == self.events_topic_name:
                self.assigned_at.pop(tp.partition, None)

    # --- the agent -----------------------------------------------------------------
    async def _agent(self, stream: Any) -> None:
        within = self.settings.batch_window_ms / 1000
        async for batch in stream.take_events(self.settings.batch_size, within=within):
            async with self.lock:
                await self.handle_batch(batch)

    async def handle_batch(self, batch: list) -> None:
        """A batch of faust stream events (the agent's path)."""
        await self.handle_messages([item.message for item in batch])

    async def handle_locked(self, messages: list) -> None:
        """A fetch's records (cdr/drain.py's path), under the lock the timer shares."""
        async with self.lock:
            await self.handle_messages(messages)

    async def handle_messages(self, messages: list) -> None:
        counts = self.stats.counts
        working: dict[bytes, Slot] = {}
        finished: list[tuple[bytes, Slot, list[CdrLeg]]] = []
        now = wall_ms()
        self._metrics_on = metrics.enabled()
        table_get = self._slots().get
        events = 0
        for message in messages:
            try:
                event = ev.read(message.value)
            except ev.Unreadable as exc:
                counts[exc.reason] += 1
                log.warning("skipping record %s[%d]@%d: %s", message.topic, message.partition,
                            message.offset, exc)
                continue
            if not is_call_event(event):             # e.g. registration.dropped: no call state
                counts["not_a_call"] += 1
                continue
            events += 1
            key = event.call_id.encode()
            slot = working.get(key)
            if slot is None:
                slot = table_get(key)
            self._step(key, slot, event, message.partition, now, working, finished)
        counts["events"] += events
        counts["batches"] += 1
        self._count_rows(finished)
        # state first (the finished slots hold the final state until their rows
        # are confirmed), then the rows; both are flushed before faust commits
        self._put_many(working)
        if finished:
            await self._publish_and_confirm(finished)

    def _step(self, key: bytes, slot: Slot | None, event: ev.CallEvent, partition: int, now: int,
              working: dict[bytes, Slot], finished: list) -> None:
        """One event through the shared fold (cdr/fold.py); its transition becomes
        table writes and rows."""
        counts = self.stats.counts
        if slot is None:
            step = fold.advance(None, False, 0, event, self.window_ms)
        else:
            step = fold.advance(slot.state, slot.done, slot.close_ms, event, self.window_ms)
        kind = step.kind
        if kind == fold.LIVE:
            working[key] = Slot(partition, now, step.state)
        elif kind == fold.ENDED:
            if step.rows and self._metrics_on:  # the event that ended the call, to its CDR (docs/metrics.md)
                metrics.observe("cdr_event_to_cdr_seconds", max(0, now - event.ts_ms) / 1000)
            self._close(key, Slot(partition, now, step.state, True), working, finished, step.rows)
        elif kind == fold.SILENT:
            # the call went silent before this event: closed as the timer would have
            self._close(key, Slot(partition, now, step.state, True, step.close_ms), working, finished,
                        step.rows)
            counts[fold.IGNORED] += 1
        elif kind == fold.AGAIN:
            # a media.stats after the call's end: its rows again, with the media
            assert slot is not None
            counts[kind] += 1
            self._close(key, Slot(slot.partition, now, step.state, True, slot.close_ms), working, finished,
                        step.rows, again=True)
        else:                   # after_finish, media_too_late, no_change
            counts[kind] += 1

    def _close(self, key: bytes, slot: Slot, working: dict[bytes, Slot], finished: list,
               rows: list[CdrLeg] | None = None, *, again: bool = False) -> None:
        if rows is None:
            rows = closed_rows(slot)
        counts = self.stats.counts
        if rows:
            if not again:
                counts["silence_closes" if slot.close_ms else "calls"] += 1
            counts["rows"] += len(rows)
            working[key] = slot
            finished.append((key, slot, rows))
        else:                                    # stray events only: nothing to record
            counts["dropped_stray"] += 1
            working[key] = Slot(slot.partition, slot.seen_ms, None, True)

    def _slots(self) -> Any:
        """The table's values: the memory store's own dict when there is one
        (faust's store mapping goes through two Python layers per access), the
        same dict it updates."""
        store = self.table.data
        return getattr(store, "data", store)

    @staticmethod
    def _count_rows(finished: list[tuple[bytes, Slot, list[CdrLeg]]]) -> None:
        # once per batch: the metrics switch is an environment lookup
        rows = sum(len(call_rows) for _, _, call_rows in finished)
        if rows:
            metrics.count("cdr_records", rows)

    # --- rows out, then the marker -------------------------------------------------------
    async def _publish_and_confirm(self, finished: list[tuple[bytes, Slot, list[CdrLeg]]]) -> None:
        """Send the rows of finished calls; once the broker has all of a batch's
        rows, their slots shrink to markers (in the background: the agent does
        not wait).  A crash before that leaves the final state in the table and
        the timer sends the rows again (identical bytes)."""
        rows_out = await self._rows()
        futures = set()
        for _, _, rows in finished:
            if not rows:
                continue
            key = rows[0].cdr_id.encode()       # every leg of a call: one cdr_id
            partition = partition_for(key, rows_out.partitions)
            for row in rows:
                futures.add(rows_out.send(partition, key, encode_row(row)))
        task = asyncio.ensure_future(self._confirm(list(futures), finished))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm(self, futures: list, finished: list[tuple[bytes, Slot, list[CdrLeg]]]) -> None:
        try:
            await asyncio.gather(*futures)
        except Exception as exc:                 # the timer resends them
            self.stats.counts["publish_errors"] += 1
            log.warning("CDR rows not confirmed (%s); they will be sent again", exc)
            return
        data_get = self.table.data.get
        actives = self._active_partitions()
        now = wall_ms()
        # still the same finished slot, of a partition still ours
        self._put_many({key: after_confirm(slot, now) for key, slot, _ in finished
                        if data_get(key) is slot and slot.partition in actives})

    async def _rows(self) -> PartitionBatcher:
        """The rows' producer (aiokafka, batches per partition), started on
        first use on the worker's loop.  Rows need no ordering with the
        changelog: a finished slot becomes a marker only once its rows are
        confirmed; a call's rows keep one partition (its cdr_id's, as a
        keyed ``send`` would choose), so a newer copy never overtakes an older."""
        if self._rows_producer is None:
            from aiokafka import AIOKafkaProducer
            producer = AIOKafkaProducer(**producer_kwargs(
                self.config.kafka, linger_ms=2, max_batch_size=1 << 20,
                client_id=f"{self.settings.app_id}-rows"))
            await producer.start()
            topic = self.settings.records_topic
            self._rows_producer = PartitionBatcher(producer, topic,
                                                   len(await producer.partitions_for(topic)))
        return self._rows_producer

    async def _stop_rows(self, *args: Any, **kwargs: Any) -> None:
        rows_out, self._rows_producer = self._rows_producer, None
        if rows_out is not None:
            await rows_out.flush()
            await rows_out.producer.stop()

    # --- table writes with an explicit partition -------------------------------------
    # The store is updated at once; the changelog record waits in _unlogged
    # (the newest value per key) until the consumer commits: flush_changelog
    # then hands them to faust's producer, which faust flushes before it
    # commits the input offsets.
    async def _put(self, key: bytes, slot: Slot) -> None:
        self._put_many({key: slot})

    def _put_many(self, slots: dict[bytes, Slot]) -> None:
        """``_put`` of a batch's slots at once (no coroutine per key)."""
        self._slots().update(slots)
        self._unlogged.update({key: (slot.partition, slot) for key, slot in slots.items()})
        holding = {key: None for key, slot in slots.items() if slot.state is not None}
        self._open.update(holding)
        if len(holding) < len(slots):            # markers now: out of the timer's way
            for key, slot in slots.items():
                if slot.state is None:
                    self._open.pop(key, None)

    async def _delete(self, key: bytes, partition: int) -> None:
        self._slots().pop(key, None)
        self._open.pop(key, None)
        self._unlogged[key] = (partition, None)

    async def flush_changelog(self) -> None:
        """Send the changelog records of every key changed since the last call
        (called with the lock held, before offsets are committed)."""
        unlogged, self._unlogged = self._unlogged, {}
        producer = self.app.producer
        changelog = self.changelog
        encode = _slot_encoder.encode
        aio = getattr(producer, "_producer", None)       # faust's aiokafka producer
        if aio is not None and hasattr(aio, "send_batch"):
            # one record batch per partition instead of faust's and aiokafka's
            # send per record (a future, a metadata lookup and the accumulator
            # each): 15% of the worker's CPU.  Every batch is in the producer
            # when this returns, and faust flushes its producer before it commits.
            by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
            for key, (partition, slot) in unlogged.items():
                by_partition.setdefault(partition, []).append((key, None if slot is None else encode(slot)))
            await queue_batches(aio, changelog, by_partition)
        else:                                               # another faust transport
            send = producer.send
            for key, (partition, slot) in unlogged.items():
                await send(changelog, key, None if slot is None else encode(slot), partition, None, None)
        self.stats.counts["changelog_records"] += len(unlogged)

    # --- the timer -----------------------------------------------------------------
    def _active_partitions(self) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives()
                if tp.topic == self.events_topic_name}

    async def sweep(self) -> None:
        """Close silent calls, send again the rows of finished calls that were
        never confirmed (e.g. after a restart), delete expired markers.

        The scan reads the table without the lock, yielding to the agent every
        few thousand keys; the actions then run under the lock on the slots
        that are still the ones the scan saw."""
        app = self.app
        if app.rebalancing or getattr(app, "in_recovery", False):
            return
        actives = self._active_partitions()
        data = self._slots()
        now = wall_ms()
        silent: list[tuple[bytes, Slot]] = []
        resend: list[tuple[bytes, Slot]] = []
        expired: list[tuple[bytes, Slot]] = []
        shrink: list[tuple[bytes, Slot]] = []
        self._ticks += 1
        full = self._full_scan or self._ticks % FULL_SCAN_TICKS == 0
        self._full_scan = False
        open_ = self._open
        for n, key in enumerate(list(data.keys() if full else open_)):
            if n % SCAN_CHUNK == SCAN_CHUNK - 1:
                await asyncio.sleep(0)
            slot = data.get(key)
            if slot is None or slot.state is None:
                open_.pop(key, None)
            else:
                open_[key] = None                # a full scan indexes recovered slots
            if slot is None or slot.partition not in actives:
                continue
            if slot.done:
                if slot.state is None:
                    if now - slot.seen_ms > self.ttl_ms:
                        expired.append((key, slot))
                elif slot.confirmed:
                    if media_grace_over(slot, now):
                        shrink.append((key, slot))
                elif now - max(slot.seen_ms, self.assigned_at.get(slot.partition, now)) > RESEND_AFTER_MS:
                    resend.append((key, slot))
                continue
            quiet_since = max(slot.seen_ms, self.assigned_at.get(slot.partition, now))
            if now - quiet_since > self.window_ms and now > silence_deadline_ms(slot.state, self.window_ms):
                silent.append((key, slot))
        if silent or resend or expired or shrink:
            await self._act(silent, resend, expired, shrink)
        metrics.set_lag("cdr", metrics.faust_lag(app.consumer, self.events_topic_name))
        if time.monotonic() - self._last_stats > self.stats_interval:
            self._last_stats = time.monotonic()
            live = sum(1 for key in open_ if (slot := data.get(key)) is not None and not slot.done)
            log.info("cdr stats: live=%d %s", live, self.stats.line())

    async def _act(self, silent: list, resend: list, expired: list, shrink: list) -> None:
        counts = self.stats.counts
        async with self.lock:
            data_get = self.table.data.get
            now = wall_ms()
            working: dict[bytes, Slot] = {}
            finished: list[tuple[bytes, Slot, list[CdrLeg]]] = []
            for key, slot in silent:
                if data_get(key) is slot:
                    self._close(key, Slot(slot.partition, now, slot.state, True,
                                          silence_end_ms(slot.state, self.window_ms)), working, finished)
            self._count_rows(finished)
            for key, slot in resend:
                if data_get(key) is slot:
                    finished.append((key, slot, closed_rows(slot) or []))
                    counts["resent"] += 1
            for key, slot in working.items():
                await self._put(key, slot)
            if finished:
                await self._publish_and_confirm(finished)
            for key, slot in expired:
                if data_get(key) is slot:
                    await self._delete(key, slot.partition)
                    counts["markers_expired"] += 1
            for key, slot in shrink:                 # the media grace is over: a marker now
                if data_get(key) is slot:
                    await self._put(key, Slot(slot.partition, slot.seen_ms, None, True))


def closed_rows(slot: Slot) -> list[CdrLeg] | None:
    """The rows of a finished slot: a call that is over, or one closed for
    silence at ``close_ms``.  A pure function of the slot, so sending them again
    gives the same bytes."""
    if slot.state is None:
        return None
    return fold.closed_rows(slot.state, slot.close_ms)


def build_app(config: Config, *, partitions: int, datadir: Path, worker_id: int = 0,
              **conf: Any) -> tuple[Any, CdrProcessor]:
    """The faust app of one CDR worker.  ``partitions`` must be the partition
    count of ``sip.events`` (the table is co-partitioned with it)."""
    _register_codec()
    settings = config.cdr
    app = faust_app(
        settings.app_id, config.kafka,
        autodiscover=False,
        datadir=str(datadir),
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=config.kafka.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_client_id=f"{settings.app_id}-{config.node.name}-{worker_id}",
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
        # the changelog goes out once per commit, tens of thousands of slots
        # at a time when catching up: in aiokafka's default 16 KB batches (one
        # in flight per partition, each a round trip) a commit took ~0.7 s,
        # half of a catch-up's time, with the fetch loop waiting on it
        producer_max_batch_size=CHANGELOG_BATCH_BYTES,
        **conf,
    )
    processor = CdrProcessor(app, config, partitions)
    use_batch_consumer(app, {processor.events_topic_name: processor.handle_locked},
                       before_commit=processor.flush_changelog, lock=lambda: processor.lock,
                       chunk=settings.batch_size)
    app.on_before_shutdown.connect(processor._stop_rows)
    return app, processor
