"""The CDR store on both back ends: chdb (embedded, a tmp dir per test) and a real
clickhouse-server 18.16 (started by the session fixture, a database per test).

Schema migration, idempotent inserts (duplicates never show), every list
filter, cursor pagination and the RFC 6076 figures on a hand-made call set
(tests/harness/clickhouse.py: sample_calls) whose numbers are worked out below.
"""
from __future__ import annotations

import uuid

import msgspec
import pytest

from cdr.store import rows
from cdr.store.queries import CdrFilter, CdrStore, Cursor, CursorError
from proxy.contract.cdr import CdrLeg
from proxy.infra.clickhouse.backend import BackendError, ChdbBackend
from proxy.infra.clickhouse.migrate import SCHEMA_FILE, MigrationError, current_version, migrate, parse
from proxy.infra.clickhouse.sqlbind import BindError, bind, literal
from tests.harness.clickhouse import sample_calls, sample_t0
from tests.harness.poll import eventually

pytestmark = pytest.mark.integration

HOUR, DAY = 3_600_000, 86_400_000


@pytest.fixture(params=["chdb", "server"])
def backend(request, tmp_path):
    if request.param == "chdb":
        b = ChdbBackend(tmp_path / "chdb")
        yield b
        b.close()
    else:
        server = request.getfixturevalue("clickhouse_server")
        database = f"t_{uuid.uuid4().hex[:12]}"
        b = server.backend(database)
        yield b
        b.execute(f"DROP DATABASE IF EXISTS {database}")
        b.close()


@pytest.fixture
def store(backend) -> CdrStore:
    migrate(backend)
    return CdrStore(backend)


@pytest.fixture
def calls():
    return sample_calls()


@pytest.fixture
def loaded(store, calls) -> CdrStore:
    store.insert_legs([leg for legs in calls.values() for leg in legs])
    return store


def ids(calls, *names):
    return {calls[name][0].cdr_id for name in names}


def listed(store, **filters) -> set[str]:
    items, cursor = store.list_calls(CdrFilter(**filters), limit=1000)
    assert cursor is None
    return {item["cdr_id"] for item in items}


# -- parameter binding (pure) -------------------------------------------------------

def test_bind_renders_literals_and_refuses_mistakes():
    assert bind("SELECT {a}, {b}, {c}, {d}", {"a": 1, "b": "x'y\\z", "c": None, "d": [1, "q"]}) == \
        "SELECT 1, 'x\\'y\\\\z', NULL, (1, 'q')"
    assert literal(True) == "1" and literal(1.5) == "1.5"
    assert literal("a\nb\x00") == "'a\\x0ab\\x00'"
    # braces inside strings, quoted identifiers and comments are not placeholders
    assert bind("SELECT '{x}', `{y}` -- {z}\n, {v}", {"v": 2}) == "SELECT '{x}', `{y}` -- {z}\n, 2"
    with pytest.raises(BindError, match="no value"):
        bind("SELECT {missing}", {})
    with pytest.raises(BindError, match="without a placeholder"):
        bind("SELECT 1", {"typo": 1})
    with pytest.raises(BindError, match="empty list"):
        bind("SELECT 1 IN {xs}", {"xs": []})
    with pytest.raises(BindError):
        bind("SELECT {x}", {"x": float("nan")})
    with pytest.raises(BindError):
        bind("SELECT {x}", {"x": object()})
    with pytest.raises(BindError, match="bad placeholder"):
        bind("SELECT {1x}", {})


NASTY = ["plain", "o'neil", "back\\slash", "\\'", "'; DROP TABLE cdr; --", "tab\tnew\nline\r",
         "nul\x00byte", "unicode é ✓ 💡", "{placeholder}", "%(x)s %s", "`backtick`", '"double"', "", "\\"]


def test_bound_strings_round_trip_through_clickhouse(backend):
    for value in NASTY:
        assert backend.query("SELECT {v}, length({v})", {"v": value}) == [(value, len(value.encode()))]
    assert backend.query("SELECT {big}, {neg}", {"big": 2**64 - 1, "neg": -(2**63)}) == \
        [(2**64 - 1, -(2**63))]


def test_uri_user():
    assert rows.uri_user("sip:+4930123@example.test;user=phone") == "4930123"
    assert rows.uri_user('"Bob" <sip:+4930123;npdi@gw.test>;tag=1') == "4930123"
    assert rows.uri_user("sips:alice:secret@example.test") == "alice"
    assert rows.uri_user("tel:+1-201-555-0123;phone-context=x") == "12015550123"
    assert rows.uri_user("sip:example.test") == ""
    assert rows.uri_user("alice@example.test") == "alice"
    assert rows.uri_user("") == ""


def test_unstorable_values_are_named():
    base = sample_calls()["c1"][0]
    assert rows.problem(base) is None
    for field, (low, high) in rows._RANGES.items():
        assert rows.problem(msgspec.structs.replace(base, **{field: high})) is None
        assert field in rows.problem(msgspec.structs.replace(base, **{field: high + 1}))
        assert field in rows.problem(msgspec.structs.replace(base, **{field: low - 1}))
    assert rows.problem(msgspec.structs.replace(base, cdr_id="")) == "empty cdr_id"


def test_cursor_is_opaque_and_checked():
    cursor = Cursor(1_764_000_000_123, str(uuid.uuid4()))
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ["", "abc", "!!!!", Cursor(1, "x").encode()[:-3], "W10"]:
        with pytest.raises(CursorError):
            Cursor.decode(bad)


# -- schema ---------------------------------------------------------------------------

def test_migration_is_idempotent(backend):
    newest = len(parse(SCHEMA_FILE.read_text())[1])
    assert migrate(backend) == list(range(1, newest + 1))
    assert migrate(backend) == []
    assert migrate(backend) == []
    assert current_version(backend) == newest
    assert backend.query("SELECT count() FROM schema_migrations FINAL") == [(newest,)]
    columns = {name for (name,) in backend.query(
        "SELECT name FROM system.columns WHERE database = {db} AND table = 'cdr'", {"db": backend.database})}
    assert columns == set(rows.COLUMNS)
    # every CdrLeg field is stored (a field added to the record needs a migration)
    assert set(CdrLeg.__struct_fields__) <= columns


def test_migration_refuses_edited_or_unknown_versions(backend):
    migrate(backend)
    text = SCHEMA_FILE.read_text()
    preamble, migrations = parse(text)
    with pytest.raises(MigrationError, match="changed since it was applied"):
        migrate(backend, text.replace("version           UInt64", "version           UInt32"))
    later = len(migrations) + 1
    extra = text + f"\n-- migration {later}: later\nCREATE TABLE IF NOT EXISTS t2 (a UInt8) ENGINE = MergeTree ORDER BY a;\n"
    assert migrate(backend, extra) == [later]
    with pytest.raises(MigrationError, match="newer than this program knows"):
        migrate(backend)
    with pytest.raises(MigrationError, match="1, 2, 3"):
        parse("-- migration 2: gap\nSELECT 1;\n")
    assert len(migrations) >= 1 and len(preamble) == 1


def test_failed_statement_is_a_backend_error(backend):
    with pytest.raises(BackendError):
        backend.query("SELECT no_such_column FROM system.one")


# -- writes: at-least-once in, exactly once out -----------------------------------------

def test_duplicates_never_show(store, calls):
    legs = [leg for legs in calls.values() for leg in legs]
    store.insert_legs(legs, version_ms=1)
    store.insert_legs(legs, version_ms=2)
    store.insert_legs(list(reversed(legs)), version_ms=2)
    items, _ = store.list_calls(CdrFilter(), limit=1000)
    assert len(items) == len(calls) == len({i["cdr_id"] for i in items})
    c4 = store.get_call(calls["c4"][0].cdr_id)
    assert [leg["leg"] for leg in c4["legs_detail"]] == [0, 1] and c4["legs"] == 2
    day1 = store.stats(CdrFilter(), period="month")
    assert day1[0]["attempts"] == 8
    # the newest copy of a leg wins
    c1 = calls["c1"][0]
    store.insert_legs([msgspec.structs.replace(c1, hangup_reason="corrected")], version_ms=3)
    assert store.get_call(c1.cdr_id)["hangup_reason"] == "corrected"
    assert len(store.list_calls(CdrFilter(), limit=1000)[0]) == len(calls)
    # after merges too
    store.backend.execute("OPTIMIZE TABLE cdr FINAL")
    assert store.backend.query("SELECT count() FROM cdr") == [(10,)]


def test_summary_and_legs_of_a_failed_over_call(loaded, calls):
    t0 = sample_t0()
    c4 = loaded.get_call(calls["c4"][0].cdr_id)
    assert c4["disposition"] == "answered" and c4["sip_code"] == 200
    assert c4["gateway"] == "gw-de" and c4["gateways"] == ["gw-de", "gw-fr"]
    assert c4["setup_ms"] == t0 + 180_000 and c4["ringing_ms"] == t0 + 180_400
    assert c4["pdd_ms"] == 400 and c4["duration_ms"] == 30_000 and c4["billable_s"] == 30
    assert c4["end_ms"] == t0 + 180_000 + 60 + 31_000
    assert c4["account"] == "bob@b.test" and c4["caller_number"] == "3311"
    assert c4["dialled_number"] == "33156" and c4["hangup_by"] == "callee"
    assert c4["setup_at"] == "2026-11-27T10:03:00.000Z"
    leg0, leg1 = c4["legs_detail"]
    assert (leg0["disposition"], leg0["sip_code"], leg0["gateway"]) == ("failed", 503, "gw-fr")
    assert (leg1["parent_leg"], leg1["leg_cause"], leg1["pdd_ms"]) == (0, "failover", 340)
    assert leg1["call_disposition"] == "answered"
    assert loaded.get_call(str(uuid.uuid4())) is None
    # a call that never rang: PDD is its deciding leg's final answer
    assert loaded.get_call(calls["c2"][0].cdr_id)["pdd_ms"] == 100
    assert loaded.get_call(calls["c6"][0].cdr_id)["pdd_ms"] == 0


# -- filters ------------------------------------------------------------------------

def test_filters(loaded, calls):
    t0 = sample_t0()
    assert listed(loaded) == ids(calls, *calls)
    assert listed(loaded, account="alice@a.test") == ids(calls, "c1", "c2", "c7", "c8", "c9")
    assert listed(loaded, account="nobody' OR '1'='1") == set()
    assert listed(loaded, caller="+33") == ids(calls, "c3", "c4")
    assert listed(loaded, caller="4930111") == ids(calls, "c1", "c2", "c7", "c8", "c9")
    assert listed(loaded, caller="car") == ids(calls, "c5", "c6")
    assert listed(loaded, caller_ip="2001:db8::5") == ids(calls, "c5", "c6")
    assert listed(loaded, callee="+4989") == ids(calls, "c1", "c2", "c7", "c8", "c9")
    assert listed(loaded, callee="4930") == ids(calls, "c5", "c6")
    assert listed(loaded, callee="33155") == ids(calls, "c3")
    assert listed(loaded, from_ms=t0 + HOUR, to_ms=t0 + DAY) == ids(calls, "c5", "c6")
    assert listed(loaded, from_ms=t0 + 180_000) == ids(calls, "c4", "c5", "c6", "c7", "c8", "c9")
    assert listed(loaded, to_ms=t0 + 180_000) == ids(calls, "c1", "c2", "c3")
    assert listed(loaded, dispositions=("answered",)) == ids(calls, "c1", "c4")
    assert listed(loaded, dispositions=("busy", "no_answer")) == ids(calls, "c2", "c3")
    assert listed(loaded, gateway="gw-de") == ids(calls, "c1", "c2", "c4", "c7")
    assert listed(loaded, gateway="gw-fr") == ids(calls, "c3", "c4")
    assert listed(loaded, min_duration_ms=45_000) == ids(calls, "c1")
    assert listed(loaded, min_duration_ms=1) == ids(calls, "c1", "c4")
    assert listed(loaded, account="bob@b.test", gateway="gw-de") == ids(calls, "c4")
    assert listed(loaded, account="alice@a.test", callee="4989",
                  from_ms=t0 + DAY, dispositions=("failed", "rejected_credit")) == ids(calls, "c7", "c8", "c9")


def test_cursor_pagination_walks_every_call_once(store, calls):
    # 25 calls, several sharing one setup time: ties are broken by cdr_id
    t0 = sample_t0()
    legs = [msgspec.structs.replace(leg, cdr_id=str(uuid.uuid4()), setup_ms=t0 + (i // 3) * 1000,
                                    end_ms=t0 + (i // 3) * 1000 + 5)
            for i, leg in enumerate([calls["c1"][0]] * 25)]
    store.insert_legs(legs)
    store.insert_legs(legs[:10])       # duplicates must not break the walk
    expected = sorted(((leg.setup_ms, leg.cdr_id) for leg in legs), reverse=True)
    for f in (CdrFilter(), CdrFilter(dispositions=("answered",)), CdrFilter(account="alice@a.test")):
        seen, cursor, pages = [], None, 0
        while True:
            page, cursor = store.list_calls(f, limit=4, cursor=cursor)
            pages += 1
            seen += [(item["setup_ms"], item["cdr_id"]) for item in page]
            if cursor is None:
                break
        assert seen == expected and pages == 7


# -- statistics (RFC 6076; definitions in docs/api.md) -------------------------------------

def by_group(result):
    return {(row["period"], row["group"]): row for row in result}


def figures(row):
    return (row["attempts"], row["answered"], row["effective"], row["asr"], row["ner"], row["acd_s"],
            row["pdd_ms"]["count"], row["pdd_ms"]["mean"], row["pdd_ms"]["p50"], row["pdd_ms"]["p95"])


def test_stats_per_day(loaded):
    # day 1: c1..c6.  answered c1, c4; effective + c2 busy, c3 no answer, c5 cancelled
    # while ringing (c6 cancelled before ringing is not).  ACD (60 + 30) / 2.
    # PDD 200, 100, 300, 400, 250 -> mean 250, p50 250, p95 400.
    # day 2: c7 failed, c8 rejected for credit, c9 a 302 (not an attempt, RFC 6076).
    result = by_group(loaded.stats(CdrFilter(), period="day"))
    assert figures(result["2026-11-27T00:00:00.000Z", ""]) == \
        (6, 2, 5, 0.3333, 0.8333, 45.0, 5, 250.0, 250, 400)
    assert figures(result["2026-11-28T00:00:00.000Z", ""]) == (2, 0, 0, 0.0, 0.0, None, 1, 80.0, 80, 80)
    assert len(result) == 2


def test_stats_per_hour_and_account(loaded):
    result = by_group(loaded.stats(CdrFilter(from_ms=sample_t0(), to_ms=sample_t0() + DAY), period="hour"))
    assert figures(result["2026-11-27T10:00:00.000Z", ""])[:5] == (4, 2, 4, 0.5, 1.0)
    assert figures(result["2026-11-27T11:00:00.000Z", ""])[:5] == (2, 0, 1, 0.0, 0.5)
    assert len(result) == 2
    bob = loaded.stats(CdrFilter(account="bob@b.test"), period="month")
    assert figures(bob[0]) == (2, 1, 2, 0.5, 1.0, 30.0, 2, 350.0, 400, 400)


def test_stats_per_gateway_counts_legs(loaded):
    # gw-de: c1 answered, c2 busy, c4 leg 1 answered; PDD 200, 100, 340
    # gw-fr: c3 no answer, c4 leg 0 failed (503); PDD 300, 50
    # no gateway: c5 cancelled while ringing, c6 cancelled; PDD 250
    result = by_group(loaded.stats(CdrFilter(to_ms=sample_t0() + DAY), period="day", group_by="gateway"))
    day = "2026-11-27T00:00:00.000Z"
    assert figures(result[day, "gw-de"]) == (3, 2, 3, 0.6667, 1.0, 45.0, 3, 213.3, 200, 340)
    assert figures(result[day, "gw-fr"]) == (2, 0, 1, 0.0, 0.5, None, 2, 175.0, 300, 300)
    assert figures(result[day, ""]) == (2, 0, 1, 0.0, 0.5, None, 1, 250.0, 250, 250)
    only = loaded.stats(CdrFilter(gateway="gw-fr"), period="month", group_by="gateway")
    assert [row["group"] for row in only] == ["gw-fr"]


def test_stats_per_destination_prefix(loaded):
    # "49": c1, c2, c5, c6, c7, c8 (+ c9, a 302: not an attempt); "33": c3, c4
    result = by_group(loaded.stats(CdrFilter(), period="month", group_by="prefix", prefix_len=2))
    month = "2026-11-01T00:00:00.000Z"
    assert figures(result[month, "49"]) == (6, 1, 3, 0.1667, 0.5, 60.0, 4, 157.5, 200, 250)
    assert figures(result[month, "33"]) == (2, 1, 2, 0.5, 1.0, 30.0, 2, 350.0, 400, 400)
    assert set(result) == {(month, "49"), (month, "33")}
    four = by_group(loaded.stats(CdrFilter(callee="49"), period="month", group_by="prefix", prefix_len=4))
    assert {group for _, group in four} == {"4989", "4930"}
    assert loaded.stats(CdrFilter(from_ms=sample_t0() + 10 * DAY)) == []


# -- media columns (issue 14, migration 3) ------------------------------------------

def with_media(leg: CdrLeg, **overrides) -> CdrLeg:
    media = dict(caller_rtp_packets=3000, caller_rtp_bytes=516_000, caller_rtp_errors=1, caller_rtp_lost=-2,
                 caller_rtp_jitter_ms=3, caller_rtp_mos_x10=43, callee_rtp_packets=2995,
                 callee_rtp_bytes=515_140, callee_rtp_errors=0, callee_rtp_lost=None, callee_rtp_jitter_ms=None,
                 callee_rtp_mos_x10=None, media_relay="udp:127.0.0.1:2223", last_media_ms=leg.end_ms - 5)
    media.update(overrides)
    return msgspec.structs.replace(leg, **media)


def test_media_columns_migrate_an_existing_table_and_round_trip(backend, calls):
    # a store at schema version 2 (before the media columns) holding a call
    text = SCHEMA_FILE.read_text()
    assert migrate(backend, text.split("-- migration 3:", 1)[0]) == [1, 2]
    old = calls["c1"][0]
    old_columns = {name: values for name, values in rows.to_columns([old], 1).items()
                   if name not in rows.MEDIA_COLUMNS}
    backend.insert(rows.TABLE, old_columns)
    assert migrate(backend)[0] == 3                      # and any later migrations
    store = CdrStore(backend)
    # the old row reads as "not relayed"
    before = store.get_call(old.cdr_id)
    assert (before["caller_rtp_packets"], before["caller_rtp_lost"], before["media_relay"]) == (0, None, "")
    assert before["legs_detail"][0]["last_media_ms"] == 0
    # a failed-over call whose answered leg 1 was relayed; leg 0 has NULLs where leg 1 has values
    leg0, leg1 = calls["c4"]
    leg1 = with_media(leg1, callee_rtp_jitter_ms=7)
    store.insert_legs([leg0, leg1, with_media(old, callee_rtp_packets=2**64 - 1, caller_rtp_mos_x10=255)])
    got = store.get_call(leg1.cdr_id)
    expected = {name: getattr(leg1, name) for name in rows.MEDIA_COLUMNS}
    assert {name: got["legs_detail"][1][name] for name in rows.MEDIA_COLUMNS} == expected
    assert {name: got[name] for name in rows.MEDIA_COLUMNS} == expected       # the call: its answered leg
    assert got["legs_detail"][0]["caller_rtp_lost"] is None and got["legs_detail"][0]["media_relay"] == ""
    items, _ = store.list_calls(CdrFilter(account="bob@b.test"), limit=10)
    assert {item["cdr_id"]: item["caller_rtp_lost"] for item in items}[leg1.cdr_id] == -2
    c1 = store.get_call(old.cdr_id)
    assert (c1["callee_rtp_packets"], c1["caller_rtp_mos_x10"]) == (2**64 - 1, 255)   # the newest copy


def test_a_cdr_and_its_later_copy_in_one_insert_read_as_the_later(store, calls):
    """The sink's batch can hold a CDR and its re-publication with the media
    (late media.stats): both would get the insert's one version, and between
    equal versions ReplacingMergeTree keeps either.  Many rounds, since the
    choice it makes is not fixed."""
    c1 = calls["c1"][0]
    for n in range(20):
        call = msgspec.structs.replace(c1, cdr_id=f"{c1.cdr_id[:-4]}{n:04d}", call_id=f"late-{n}")
        store.insert_legs([call, with_media(call, callee_rtp_packets=1000 + n)], version_ms=5)
        got = store.get_call(call.cdr_id)
        assert got["callee_rtp_packets"] == 1000 + n, got
        items, _ = store.list_calls(CdrFilter(account=call.account), limit=100)
        assert {i["cdr_id"]: i["callee_rtp_packets"] for i in items}[call.cdr_id] == 1000 + n


def test_media_values_out_of_range_are_named():
    base = with_media(sample_calls()["c1"][0])
    assert rows.problem(base) is None
    assert "caller_rtp_mos_x10" in rows.problem(msgspec.structs.replace(base, caller_rtp_mos_x10=256))
    assert "callee_rtp_packets" in rows.problem(msgspec.structs.replace(base, callee_rtp_packets=-1))
    assert rows.problem(msgspec.structs.replace(base, caller_rtp_lost=None)) is None


def test_stats_5min_buckets_per_account_and_seer(loaded):
    # docs/quality.md; the same SQL on chdb and 18.16.  10:00-10:05: alice c1 answered,
    # c2 busy; bob c3 480 after ringing, c4 answered.  11:00-11:05: carol c5 cancelled
    # while ringing (NER effective, SEER not), c6 cancelled before ringing.
    result = by_group(loaded.stats(CdrFilter(to_ms=sample_t0() + DAY), period="5min", group_by="account"))
    ten, eleven = "2026-11-27T10:00:00.000Z", "2026-11-27T11:00:00.000Z"
    assert set(result) == {(ten, "alice@a.test"), (ten, "bob@b.test"), (eleven, "carol@c.test")}
    assert [(r["attempts"], r["asr"], r["ner"], r["seer"]) for r in
            (result[ten, "alice@a.test"], result[ten, "bob@b.test"], result[eleven, "carol@c.test"])] == [
        (2, 0.5, 1.0, 1.0), (2, 0.5, 1.0, 1.0), (2, 0.0, 0.5, 0.0)]


# -- cdr_call: the stored call summaries (migration 6) ----------------------------------

_STORED = ("setup_ms", "legs", "account", "caller_number", "caller_ip", "dialled_number", "disposition",
           "sip_code", "ringing_ms", "duration_ms", "pdd_ms", "gateways")


def stored_calls(backend) -> dict[str, dict]:
    return {row["cdr_id"]: row for row in backend.query_dicts(
        f"SELECT cdr_id, {', '.join(_STORED)}, leg_gateway, leg_setup_ms FROM cdr_call FINAL")}


def api_calls(store, cdr_ids) -> dict[str, dict]:
    out = {}
    for cdr_id in cdr_ids:
        call = store.get_call(cdr_id)
        out[cdr_id] = {name: (sorted(set(call["gateways"]) | ({""} if any(
            not leg["gateway"] for leg in call["legs_detail"]) else set())) if name == "gateways" else call[name])
            for name in _STORED}
    return out


def test_stored_summaries_are_the_api_summaries_whatever_the_insert_order(store, calls):
    """The summary insert_legs stores per call (rows.call_row) is the one the API
    computes from the legs (queries._calls_sql), also when a call's legs come in
    separate inserts (leg 0 last), twice, or later with media."""
    legs = [leg for legs in calls.values() for leg in legs]
    multi = [legs for legs in calls.values() if len(legs) > 1]
    assert multi, "the sample needs a call with several legs"
    later = {(leg.cdr_id, leg.leg) for legs in multi for leg in legs if leg.leg == 0}
    store.insert_legs([leg for leg in legs if (leg.cdr_id, leg.leg) not in later], version_ms=10)
    stored = stored_calls(store.backend)
    assert not set(stored) & {cdr_id for cdr_id, _ in later}       # no leg 0 yet: not a call yet
    store.insert_legs([leg for leg in legs if (leg.cdr_id, leg.leg) in later], version_ms=20)
    store.insert_legs(legs[:3], version_ms=30)                      # duplicates
    answered = next(leg for leg in legs if leg.disposition == "answered")
    store.insert_legs([with_media(answered, callee_rtp_packets=7)], version_ms=40)
    stored = stored_calls(store.backend)
    assert set(stored) == {legs[0].cdr_id for legs in calls.values()}
    assert {cdr_id: {name: row[name] for name in _STORED} for cdr_id, row in stored.items()} == \
        api_calls(store, stored)
    for legs in multi:
        row = stored[legs[0].cdr_id]
        assert row["leg_gateway"] == [leg.gateway for leg in legs]            # each leg's own, in order
        assert row["leg_setup_ms"] == [leg.setup_ms for leg in legs]


def test_migration_6_summarises_the_calls_stored_before(backend, calls):
    text = SCHEMA_FILE.read_text()
    assert migrate(backend, text.split("-- migration 6:", 1)[0]) == [1, 2, 3, 4, 5]
    legs = [leg for legs in calls.values() for leg in legs]
    backend.insert(rows.TABLE, rows.to_columns(legs, 1))               # legs written before cdr_call existed
    backend.insert(rows.TABLE, rows.to_columns(legs[:2], 2))
    assert migrate(backend, text.split("-- migration 7:", 1)[0]) == [6]
    store = CdrStore(backend)
    stored = stored_calls(backend)
    assert {cdr_id: {name: row[name] for name in _STORED} for cdr_id, row in stored.items()} == \
        api_calls(store, {legs[0].cdr_id for legs in calls.values()})
    # migration 7 moves cdr_call to a partition per day: every summary with it
    assert migrate(backend) == [7]
    assert stored_calls(backend) == stored
    assert backend.query("SELECT DISTINCT partition_id FROM system.parts WHERE database = {db} "
                         "AND table = 'cdr_call' AND active ORDER BY partition_id",
                         {"db": backend.database}) == [("20261127",), ("20261128",)]


# -- counted days (migration 7, cdr/store/rollup.py) --------------------------------

def many_calls(days: int = 3, per_day: int = 120, seed: int = 7) -> list[CdrLeg]:
    """Calls over ``days`` UTC days from sample_t0's midnight: varied outcomes,
    prefixes and PDDs (repeated values, zeros), a fifth with two legs."""
    import random

    from proxy.contract.cdr import cdr_id_for
    rng = random.Random(seed)
    midnight = sample_t0() // DAY * DAY
    outcomes = [("answered", 200), ("busy", 486), ("no_answer", 480), ("cancelled", 487),
                ("failed", 503), ("failed", 302), ("rejected_credit", 402)]
    legs = []
    for n in range(days * per_day):
        setup = midnight + n * (days * DAY // (days * per_day)) + rng.randrange(1000)
        disposition, code = rng.choice(outcomes)
        cdr_id = cdr_id_for(f"many-{n}@test", "t")
        number = rng.choice(("+4930", "+4989", "+3314", "+441", "+1", "99")) + str(rng.randrange(10**6))
        count = 2 if n % 5 == 0 else 1
        for leg in range(count):
            last = leg == count - 1
            ringing = rng.choice((0, 0, 180, 250, 250, rng.randrange(100, 4000)))
            legs.append(CdrLeg(
                cdr_id=cdr_id, leg=leg, legs=count, call_id=f"many-{n}@test", from_tag="t",
                account=f"u{n % 7}@x.test", caller_uri=f"sip:u{n % 7}@x.test", dialled=f"sip:{number}@x.test",
                gateway=f"gw{rng.randrange(3)}", setup_ms=setup + leg * 40,
                ringing_ms=setup + ringing if ringing and last else 0,
                answer_ms=setup + 3000 if disposition == "answered" and last else 0, end_ms=setup + 9000,
                duration_ms=rng.randrange(1000, 90_000) if disposition == "answered" and last else 0,
                pdd_ms=rng.choice((0, 90, 90, 400, rng.randrange(50, 3000))),
                sip_code=code if last else 503, disposition=disposition if last else "failed",
                call_sip_code=code, call_disposition=disposition))
    return legs


def test_columns_of_many_legs_are_the_legs_fields_in_order():
    legs = many_calls(days=3, per_day=1500)
    assert len(legs) > 2 * rows.TRANSPOSE_CHUNK           # transposed in several chunks
    columns = rows.to_columns(legs, 7)
    assert {name: columns[name] for name in rows.LEG_FIELDS} == \
        {name: [getattr(leg, name) for leg in legs] for name in rows.LEG_FIELDS}
    assert columns["version"] == [7] * len(legs)
    assert columns["dialled_number"] == [rows.uri_user(leg.dialled) for leg in legs]


STATS_SHAPES = [
    dict(period="day"), dict(period="month"),
    dict(period="month", group_by="prefix", prefix_len=2), dict(period="day", group_by="prefix", prefix_len=1),
    dict(period="day", group_by="prefix", prefix_len=3), dict(period="hour"),
    dict(period="day", group_by="gateway"), dict(period="month", group_by="account"),
]


def all_stats(store: CdrStore, midnight: int) -> list:
    ranges = [CdrFilter(), CdrFilter(from_ms=midnight + DAY), CdrFilter(to_ms=midnight + 2 * DAY),
              CdrFilter(from_ms=midnight + 5 * HOUR, to_ms=midnight + 2 * DAY + 7 * HOUR),
              CdrFilter(from_ms=midnight + 5 * HOUR, to_ms=midnight + 9 * HOUR),
              CdrFilter(from_ms=midnight + DAY, to_ms=midnight + 2 * DAY, callee="49")]
    return [store.stats(f, **shape) for f in ranges for shape in STATS_SHAPES]   # type: ignore[arg-type]


def test_counted_days_answer_as_the_calls_do(store):
    """Statistics from the counts of closed days (and cdr_call for the rest)
    equal those from every call (use_counts off), whatever the range cuts;
    a late CDR makes its day come from cdr_call until it is counted again, and
    a re-inserted call counts once."""
    from cdr.store import rollup
    legs = many_calls()
    midnight = sample_t0() // DAY * DAY
    store.insert_legs(legs, version_ms=10)
    store.insert_legs(legs[:40], version_ms=11)                          # redelivered
    raw = CdrStore(store.backend, use_counts=False)
    expected = all_stats(raw, midnight)
    assert any(row["pdd_ms"]["count"] > 20 for rows in expected for row in rows)
    days = [midnight // DAY + n for n in range(3)]
    # the last day ends 3 h before "now": not closed yet
    assert rollup.roll_up(store.backend, now_ms=midnight + 3 * DAY + 3 * HOUR) == days[:2]
    assert set(rollup.usable_runs(store.backend)) == set(days[:2])
    assert rollup.roll_up(store.backend, now_ms=midnight + 3 * DAY + 5 * HOUR) == days[2:]
    assert rollup.roll_up(store.backend, now_ms=midnight + 3 * DAY + 5 * HOUR) == []     # nothing changed
    assert all_stats(store, midnight) == expected
    # a late, corrected CDR of day 2 (a newer version: other outcome, other PDD)
    late = next(leg for leg in legs if leg.legs == 1 and leg.setup_ms >= midnight + DAY)
    store.insert_legs([msgspec.structs.replace(late, disposition="busy", call_disposition="busy", sip_code=486,
                                               call_sip_code=486, pdd_ms=77, ringing_ms=0)], version_ms=12)
    assert set(rollup.usable_runs(store.backend)) == {days[0], days[2]}
    changed = all_stats(raw, midnight)
    assert changed != expected
    assert all_stats(store, midnight) == changed
    # (day 2's first count was made at +3 h: within STALE_RUN_MS it is kept)
    assert rollup.roll_up(store.backend, now_ms=midnight + 3 * DAY + 3 * HOUR + 30 * 60_000) == [days[1]]
    assert set(rollup.usable_runs(store.backend)) == set(days)
    assert all_stats(store, midnight) == changed
    # the superseded count of day 2 is deleted once no query can still hold it
    superseded = {run.run for run in rollup.runs(store.backend)} - set(rollup.usable_runs(store.backend).values())
    assert len(superseded) == 1
    assert rollup.roll_up(store.backend, now_ms=midnight + 3 * DAY + 3 * HOUR + rollup.STALE_RUN_MS + 1) == []
    eventually(lambda: not superseded & {run.run for run in rollup.runs(store.backend)} and not
               store.backend.query("SELECT count() FROM cdr_day WHERE run IN {runs}", {"runs": list(superseded)})[0][0],
               "the superseded run's rows to be deleted")
    assert all_stats(store, midnight) == changed
    # (and the counts are what answered: a count changed by hand shows)
    run = rollup.usable_runs(store.backend)[days[0]]
    store.backend.execute("INSERT INTO cdr_day (day, run, prefix, calls, attempts, answered, effective, "
                          "seer_effective, answered_ms, pdd_n, pdd_sum, pdd_values, pdd_counts) "
                          "SELECT toDate({day}), {run}, '49', 1, 1, 1, 1, 1, 1000, 1, 5, [5], [1]",
                          {"day": rollup.iso_day(days[0]), "run": run})
    assert store.stats(CdrFilter(), period="day")[0]["attempts"] == \
        raw.stats(CdrFilter(), period="day")[0]["attempts"] + 1


async def test_the_api_process_counts_closed_days(store):
    """RollUp (the API process's task, api/sinks.py) runs the pass in a thread
    and stops when asked."""
    import asyncio

    from cdr.store import rollup
    store.insert_legs(many_calls(days=2, per_day=20), version_ms=10)
    task = rollup.RollUp(store.backend, interval_s=3600)
    running = asyncio.create_task(task.run())
    await asyncio.to_thread(eventually, lambda: len(rollup.usable_runs(store.backend)) == 2, "two days counted")
    task.stop()
    await asyncio.wait_for(running, 30)
