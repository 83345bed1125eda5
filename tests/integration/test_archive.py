"""The event archive and CDR rebuild on both back ends (chdb, clickhouse-server 18.16).

Archived twice is one event; a rebuild of an unchanged period writes nothing
(the cdr table byte for byte as before, versions included); after the CDRs are
gone a rebuild brings back exactly the legs the live fold made; --dry-run
reports and writes nothing."""
from __future__ import annotations

import uuid

import msgspec
import pyarrow as pa
import pytest

from bench.cdr_pipeline import call_events
from cdr import fold
from cdr.archive.rebuild import RebuildLimits, rebuild_cdrs
from cdr.archive.sink import archived
from cdr.archive.store import ArchiveStore, payload_column
from cdr.store.queries import CdrStore
from proxy.contract import events as ev
from proxy.infra.clickhouse.backend import ChdbBackend
from proxy.infra.clickhouse.migrate import migrate

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000          # 2026-01-01
HOUR = 3_600_000
NOW = T0 + 100 * HOUR
LIMITS = RebuildLimits(window_ms=HOUR, span_ms=3 * HOUR)
SHAPES = ("answered_caller_bye", "busy", "cancel", "forked", "failover", "not_found", "media_timeout")


@pytest.fixture(params=["chdb", "server"])
def backend(request, tmp_path):
    if request.param == "chdb":
        b = ChdbBackend(tmp_path / "chdb")
        migrate(b)
        yield b
        b.close()
    else:
        server = request.getfixturevalue("clickhouse_server")
        database = f"a_{uuid.uuid4().hex[:12]}"
        b = server.backend(database)
        migrate(b)
        yield b
        b.execute(f"DROP DATABASE IF EXISTS {database}")
        b.close()


def calls(n: int = 20) -> list[list]:
    # one call starts before the range and ends inside it (belongs to the earlier range)
    return [call_events(SHAPES[i % len(SHAPES)], f"c{i}@test", T0 + i * 60_000 - (HOUR if i == 0 else 0))
            for i in range(n)]


def cdr_table(backend) -> list[tuple]:
    return backend.query("SELECT * FROM cdr ORDER BY cdr_id, leg, version")


def load(backend, events_of_calls: list[list]) -> list:
    """Archive every event (twice: at-least-once) and store the live fold's CDRs."""
    archive = ArchiveStore(backend)
    records = [archived("sip", ev.encode(e)) for events in events_of_calls for e in events]
    archive.insert(records)
    archive.insert(records[: len(records) // 2])
    legs = [leg for events in events_of_calls
            for leg in fold.rebuild_call(events, LIMITS.window_ms, NOW) or []]
    CdrStore(backend).insert_legs(legs, version_ms=T0)
    return legs


def test_archived_twice_is_one_event_and_reads_collapse_copies(backend):
    events_of_calls = calls(5)
    load(backend, events_of_calls)
    archive = ArchiveStore(backend)
    total = sum(len(events) for events in events_of_calls)
    assert archive.count("sip")[0] == total
    read = dict(archive.call_events(["c1@test"], T0, T0 + 4 * HOUR))
    assert [ev.decode(p).id for p in read["c1@test"]] == [e.id for e in events_of_calls[1]]
    assert archive.first_calls(T0, T0 + HOUR, LIMITS.span_ms) == ["c1@test", "c2@test", "c3@test", "c4@test"]


def test_payloads_are_stored_byte_for_byte_and_only_utf8_is_archived(backend):
    # the payload column is built from the records' bytes (no str per record):
    # non-ASCII text comes back as published, whatever the back end
    events = [msgspec.structs.replace(e, call_id=f"Zoë-{i}@test") for i, e in enumerate(calls(1)[0])]
    published = [ev.encode(e).replace(b'"bench-1"', '"près-ü€𝄞"'.encode()) for e in events]
    assert all(not value.isascii() for value in published)
    archive = ArchiveStore(backend)
    assert archive.insert([archived("sip", value) for value in published]) == len(published)
    stored = backend.query("SELECT call_id, payload FROM events ORDER BY ts_ms, id")
    assert [(call_id, payload.encode() if isinstance(payload, str) else payload)
            for call_id, payload in stored] == [(e.call_id, value) for e, value in zip(events, published)]
    with pytest.raises(msgspec.DecodeError, match="not UTF-8"):
        archived("sip", published[0].replace("ë".encode(), b"\xeb"))


def test_payload_column_equals_arrow_of_the_decoded_text():
    values = [b"", b"ascii", "Zoë €𝄞".encode(), b"{}" * 1000]
    column = payload_column(values)
    assert column.equals(pa.array([v.decode() for v in values], pa.string()))
    with pytest.raises(ValueError):
        payload_column([b"ok", b"\xff\xfe"])


def test_rebuild_of_an_unchanged_period_changes_nothing_byte_for_byte(backend):
    load(backend, calls())
    before = cdr_table(backend)
    report = rebuild_cdrs(CdrStore(backend), LIMITS, T0 - 2 * HOUR, T0 + 2 * HOUR, now_ms=NOW)
    assert (report.calls, report.unchanged, report.added, report.changed, report.removed,
            report.legs_written) == (20, 20, 0, 0, 0, 0)
    assert cdr_table(backend) == before


def test_rebuild_after_the_cdrs_are_gone_gives_the_same_legs(backend):
    legs = load(backend, calls())
    before = backend.query("SELECT * EXCEPT version FROM cdr FINAL ORDER BY cdr_id, leg") \
        if backend.kind == "chdb" else None
    backend.execute("TRUNCATE TABLE cdr")
    backend.execute("TRUNCATE TABLE cdr_calls")
    store = CdrStore(backend)
    dry = rebuild_cdrs(store, LIMITS, T0, T0 + 2 * HOUR, dry_run=True, now_ms=NOW)
    assert (dry.added, dry.legs_written, cdr_table(backend)) == (19, 0, [])
    # c0 started an hour earlier: the earlier range has it
    report = rebuild_cdrs(store, LIMITS, T0 - 2 * HOUR, T0 + 2 * HOUR, now_ms=NOW)
    assert (report.added, report.legs_written) == (20, len(legs))
    from cdr.archive.rebuild import stored_legs
    stored = stored_legs(store, sorted({leg.cdr_id for leg in legs}))
    assert sorted((leg for by_leg in stored.values() for leg in by_leg.values()),
                  key=lambda leg: (leg.cdr_id, leg.leg)) == sorted(legs, key=lambda leg: (leg.cdr_id, leg.leg))
    if before is not None:
        assert backend.query("SELECT * EXCEPT version FROM cdr FINAL ORDER BY cdr_id, leg") == before


def test_dry_run_lists_changed_fields_and_removed_calls(backend):
    legs = load(backend, calls(4))
    store = CdrStore(backend)
    import msgspec
    edited = msgspec.structs.replace(legs[0], sip_reason="edited by hand", billable_s=legs[0].billable_s + 7)
    stray = msgspec.structs.replace(legs[0], cdr_id=str(uuid.uuid4()))
    store.insert_legs([edited, stray], version_ms=T0 + 1)
    report = rebuild_cdrs(store, LIMITS, T0 - 2 * HOUR, T0 + 2 * HOUR, dry_run=True, now_ms=NOW)
    assert (report.changed, report.removed, report.unchanged, report.legs_written) == (1, 1, 3, 0)
    changed = next(d for d in report.diffs if d.change == "changed")
    assert changed.legs[0] == {"billable_s": [edited.billable_s, legs[0].billable_s],
                               "sip_reason": ["edited by hand", legs[0].sip_reason]}


def test_repair_finds_calls_over_without_a_cdr_and_folds_their_rows(backend):
    from cdr.archive.repair import CdrRepair

    events_of_calls = calls(6)
    legs = load(backend, events_of_calls)
    lost = {"c2@test", "c4@test"}
    backend.execute("TRUNCATE TABLE cdr")
    CdrStore(backend).insert_legs([leg for leg in legs if leg.call_id not in lost], version_ms=T0)
    published: list = []

    async def publish(rows):
        published.extend(rows)

    repair = CdrRepair(ArchiveStore(backend), publish, window_ms=LIMITS.window_ms, span_ms=LIMITS.span_ms,
                       grace_s=30, lookback_s=4 * 3600)
    ended = {events[0].call_id: max(e.ts_ms for e in events) for events in events_of_calls}
    assert "c4@test" not in repair.missing(ended["c4@test"] + 10_000)    # the live path still has its turn
    now = max(ended.values()) + 31_000
    assert repair.missing(now) == sorted(lost)
    assert sorted(repair.rows_of(sorted(lost), now), key=lambda r: (r.call_id, r.leg)) == \
        sorted((leg for leg in legs if leg.call_id in lost), key=lambda r: (r.call_id, r.leg))


def test_ledger_events_the_repair_reinserts_are_archived_too(backend):
    """Ledger events lost with the broker exist only in billing's SQLite: the
    ledger repair's inserts (api/sinks.py) go to the archive as well, in the
    bytes billing publishes."""
    from decimal import Decimal

    from api.sinks import _ArchivingLedger
    from proxy.contract.ledger import LedgerEvent, decode_event

    inserted: list = []

    class Queries:
        def insert(self, events):
            inserted.extend(events)
            return len(events)

    event = LedgerEvent(id=str(uuid.uuid4()), account="alice@example.test", kind="debit",
                        amount=Decimal("0.120000"), currency="EUR", ts_ms=T0, seq=7, call_id="c1@test")
    ledger = _ArchivingLedger(Queries(), ArchiveStore(backend))
    assert ledger.insert([event]) == 1 and inserted == [event]
    ledger.insert([event])                                  # the repair runs again: still one event
    assert ArchiveStore(backend).count("ledger") == (1, 2)
    ((account, kind, call_id, payload),) = backend.query(
        "SELECT account, type, call_id, payload FROM events WHERE source = 'ledger' LIMIT 1 BY id")
    assert (account, kind, call_id, decode_event(payload.encode())) == ("alice@example.test", "debit", "c1@test",
                                                                         event)


def test_ledger_events_the_archiver_missed_are_archived_from_ledger_events(backend):
    from decimal import Decimal

    from api.sinks import archive_ledger_gaps
    from billing.ledger.clickhouse import LedgerQueries
    from proxy.contract.ledger import LedgerEvent, encode_event

    events = [LedgerEvent(id=f"led-{i}", account="bob@example.test", kind="topup", amount=Decimal("5"),
                          currency="EUR", ts_ms=T0 + i, seq=i + 1, key=f"k{i}") for i in range(3)]
    LedgerQueries(backend).insert(events)
    archive = ArchiveStore(backend)
    archive.insert([archived("ledger", encode_event(events[0]))])      # the archiver had read the first
    assert archive_ledger_gaps(archive, T0 + 60_000, 30_000, HOUR) == 2
    assert archive_ledger_gaps(archive, T0 + 60_000, 30_000, HOUR) == 0
    assert {row[0] for row in backend.query("SELECT id FROM events WHERE source = 'ledger'")} == \
        {"led-0", "led-1", "led-2"}
