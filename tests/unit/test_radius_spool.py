"""The RADIUS spool shared by the workers of one consumer group
(radius/queue.py): rows filed by partition, the owner fence, the upgrade of
a spool written before partitions were kept, and the core's hand-over
(radius/worker.py ``Accounting.drop`` / ``load``)."""
from __future__ import annotations

import sqlite3

import msgspec
import pytest

from bench.cdr_pipeline import call_events
from proxy.contract.callfold import fold
from radius.queue import Fenced, Spool
from radius.records import Context, Progress, plan

T0 = 1_767_225_600_000


def records_of(call_id: str) -> list:
    return plan(fold(call_events("answered_caller_bye", call_id, T0, scale=0.01)), Progress(), Context())[0]


def test_pending_and_calls_are_filed_by_partition(tmp_path):
    spool = Spool(tmp_path)
    a, b = records_of("a@t"), records_of("b@t")
    added = spool.commit(a + b, {"a@t": b"x", "b@t": b"y"}, partitions=[1] * len(a) + [4] * len(b),
                         call_partitions={"a@t": 1, "b@t": 4})
    assert [e.partition for e in added] == [1] * len(a) + [4] * len(b)
    assert {e.session for e in spool.pending(partitions={4})} == {"b@t;leg=0"}
    assert spool.pending(partitions=set()) == []
    assert len(spool.pending()) == len(a) + len(b)
    assert dict(spool.calls({1})) == {"a@t": b"x"} and dict(spool.calls()) == {"a@t": b"x", "b@t": b"y"}
    spool.close()


def test_a_worker_whose_partition_was_claimed_is_fenced_and_writes_nothing(tmp_path):
    first, second = Spool(tmp_path), Spool(tmp_path)             # two workers, one spool file
    first.claim({0, 1, 2}, "w1")
    first.commit(records_of("one@t")[:1], partitions=[1], owner="w1")
    second.claim({1}, "w2")                                      # the group moved partition 1
    with pytest.raises(Fenced):
        first.commit(records_of("two@t"), {"two@t": b"s"}, partitions=[1, 1],
                     owner="w1", call_partitions={"two@t": 1})
    assert {e.session for e in second.pending()} == {"one@t;leg=0"} and list(second.calls()) == []
    first.commit(records_of("three@t")[:1], partitions=[2], owner="w1")    # its other partitions: fine
    second.commit(records_of("two@t"), partitions=[1, 1], owner="w2")
    assert len(second.pending(partitions={1})) == 3
    with pytest.raises(ValueError):
        second.commit(records_of("four@t"), partitions=[1])
    first.close()
    second.close()


def test_a_spool_from_before_partitions_is_upgraded(tmp_path):
    db = sqlite3.connect(tmp_path / "radius.sqlite")
    db.executescript("""
        CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
            session TEXT NOT NULL, status INTEGER NOT NULL, attrs BLOB NOT NULL, enqueued_ms INTEGER NOT NULL);
        CREATE TABLE calls (call_id TEXT PRIMARY KEY, slot BLOB NOT NULL) WITHOUT ROWID;
    """)
    from radius.worker import Slot
    slot = msgspec.msgpack.encode(Slot(5, T0, None, Progress(start=True, final=True)))
    db.execute("INSERT INTO calls VALUES ('old@t', ?)", (slot,))
    db.execute("INSERT INTO queue (key, session, status, attrs, enqueued_ms) VALUES ('k', 's', 1, ?, 0)",
               (msgspec.msgpack.encode([["User-Name", "x"]]),))
    db.commit()
    db.close()
    spool = Spool(tmp_path)
    assert dict(spool.calls({5})) == {"old@t": slot}
    assert [(e.key, e.partition) for e in spool.pending()] == [("k", 0)]
    spool.close()


def test_the_core_drops_and_loads_calls_by_partition():
    from radius.worker import Accounting, Slot
    core = Accounting(Context(), silence_ms=3_600_000, ttl_ms=600_000, started_ms=T0)
    events = call_events("answered_caller_bye", "c@t", T0, scale=0.01)
    changed: dict = {}
    records: list = []
    for event in events[:-1]:                                  # answered, not ended
        core.event(event, 2, T0, records, changed)
    done: dict = {}
    for event in call_events("answered_caller_bye", "d@t", T0, scale=0.01):
        core.event(event, 3, T0, [], done)
    puts, _ = core.apply_changes(changed | done, [])
    assert core.live == 1 and list(core.finished) == ["d@t"]
    assert all(r.call_id == "c@t" for r in records)
    core.drop({2, 3})
    assert core.live == 0 and not core.finished
    core.load(puts.items())
    assert core.calls["c@t"].partition == 2 and core.finished == {"d@t": (T0, 3)}
    assert isinstance(core.calls["c@t"], Slot)
