"""The archiver: ``sip.events``, ``ledger.events`` and ``call.control`` → the ``events`` table.

A consumer like the other sinks (the shared ``TopicSink`` loop: batches,
offsets committed only after the insert holding their records succeeded,
idempotent by event id), in the API process that owns ClickHouse.

After each commit it publishes its committed positions of ``sip.events``
with the broker's epoch in DATA_DIR/run/archive.json (``ArchivePosition``):
the proxy keeps a published event in its outbox until the archive is past
it, and publishes it again when the broker restarted before (docs/operations.md).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec
from aiokafka import TopicPartition

from proxy.infra import clock
from proxy.infra.clickhouse.sink import TopicSink
from proxy.infra.config import ARCHIVE_RUN_FILE, KafkaSettings
from proxy.infra.runfiles import PublishedFile

from .store import Archived, ArchiveStore, problem

__all__ = ["ArchiveSink"]

log = logging.getLogger("cdr.archive")


class _Head(msgspec.Struct, frozen=True):
    """The fields of a sip.events / call.control record the archive indexes."""
    id: str
    ts_ms: int
    type: str = ""
    call_id: str = ""


class _LedgerHead(msgspec.Struct, frozen=True):
    id: str
    ts_ms: int
    kind: str = ""
    account: str = ""
    call_id: str = ""


_head = msgspec.json.Decoder(_Head)
_ledger_head = msgspec.json.Decoder(_LedgerHead)


def archived(source: str, value: bytes) -> Archived:
    """A record of ``source`` (one of store.SOURCES) as an archive row; raises
    msgspec.DecodeError / ValidationError on what is not such a record."""
    # every producer writes UTF-8 JSON; the decoder below skips the fields it
    # does not read without checking them, so the bytes are checked here (an
    # ASCII test, in C, decides for nearly every record without a copy)
    if not value.isascii():
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"not UTF-8: {exc}") from None
    if source == "ledger":
        led = _ledger_head.decode(value)
        return Archived(led.ts_ms, source, led.kind, led.id, led.call_id, led.account, bytes(value))
    head = _head.decode(value)
    return Archived(head.ts_ms, source, head.type, head.id, head.call_id, "", bytes(value))


def _fetch_options(batch_ms: int) -> dict[str, int]:
    """Fetches that wait for data (up to 1 MB, at most a quarter of the batch
    window): sip.events carries ~6 records per call, and without a minimum a
    loaded archiver fetches a few records at a time (Tansu: 190 records per
    fetch at 10k records/s, 2,700 with these), each fetch a request, a response
    and its parsing."""
    return {"fetch_min_bytes": 1 << 20, "fetch_max_wait_ms": max(1, min(500, batch_ms // 4))}


class ArchiveSink(TopicSink[Archived]):
    def __init__(self, store: ArchiveStore, kafka: KafkaSettings, *, sip_topic: str, ledger_topic: str,
                 control_topic: str, group_id: str = "archive", partitions: dict[str, int],
                 batch_rows: int = 5000, batch_ms: int = 200, epoch=None,
                 run_dir: str | os.PathLike | None = None) -> None:
        self.sources = {sip_topic: "sip", ledger_topic: "ledger", control_topic: "control"}
        super().__init__(Archived, store.insert, kafka, topic=sip_topic, group_id=group_id,
                         problem=problem, batch_rows=batch_rows, batch_ms=batch_ms,
                         topics={name: partitions[name] for name in self.sources}, epoch=epoch,
                         client_id="sipledger-archive", consumer_options=_fetch_options(batch_ms))
        self.store = store
        self.sip_topic = sip_topic
        self.position = ArchivePosition(Path(run_dir) / ARCHIVE_RUN_FILE if run_dir is not None else None)

    def decode_record(self, tp: TopicPartition, value: bytes) -> Archived:
        return archived(self.sources[tp.topic], value)

    def committed(self, offsets: dict[TopicPartition, int], epoch: str) -> None:
        self.position.advance(epoch, {tp.partition: offset for tp, offset in offsets.items()
                                      if tp.topic == self.sip_topic})


class ArchivePosition:
    """The archiver's committed next offsets of sip.events per partition, in one
    broker epoch, as DATA_DIR/run/archive.json: ``{"epoch": E, "sip": {"0": n, ...},
    "pid": P, "ms": T}``.  A new epoch starts from nothing."""

    def __init__(self, path: Path | None) -> None:
        self.file = PublishedFile(path) if path is not None else None
        self.epoch: str | None = None
        self.offsets: dict[int, int] = {}

    def advance(self, epoch: str, offsets: dict[int, int]) -> None:
        if epoch != self.epoch:
            self.epoch, self.offsets = epoch, {}
        for partition, offset in offsets.items():
            if offset > self.offsets.get(partition, -1):
                self.offsets[partition] = offset
        if self.file is not None and self.offsets:
            state = {"epoch": epoch, "sip": {str(p): o for p, o in sorted(self.offsets.items())}}
            self.file.publish({**state, "pid": os.getpid(), "ms": clock.now_ms()},
                              unchanged_if=repr(state))
