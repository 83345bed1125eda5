"""REGISTER processing (RFC 3261 §10.3) on the shared location store: every test
taking ``store`` runs on SQLite and on PostgreSQL (the scale-out store, docs/scale-out.md)."""
from __future__ import annotations

import sqlite3

import msgspec
import pytest

from proxy.core.location import Binding, LocationError, LocationStore, normalize_aor
from proxy.core.registrar import Registrar
from proxy.infra.config import RegistrarSettings
from proxy.sip.message import SipMessage, parse
from tests.harness.postgres import PostgresServer, postgres_available

AOR = "alice@example.test"
SOURCE = ("203.0.113.7", 40123, "udp")
T0 = 1_700_000_000.0


def register(*contacts: str, expires: str | None = None, call_id: str = "reg-1", cseq: int = 1,
             extra: tuple[tuple[str, str], ...] = ()) -> SipMessage:
    msg = SipMessage.request("REGISTER", "sip:example.test")
    msg.add("via", "SIP/2.0/UDP 203.0.113.7:40123;branch=z9hG4bK1")
    msg.add("from", f"<sip:{AOR}>;tag=1")
    msg.add("to", f"<sip:{AOR}>")
    msg.add("call-id", call_id)
    msg.add("cseq", f"{cseq} REGISTER")
    for c in contacts:
        msg.add("contact", c)
    if expires is not None:
        msg.add("expires", expires)
    for key, value in extra:
        msg.add(key, value)
    return msg


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "data" / "location.sqlite"


@pytest.fixture(scope="module")
def postgres_location():
    """One PostgreSQL for the module; each test empties the table."""
    if not postgres_available():
        pytest.fail("PostgreSQL 15 (Debian postgresql) is not installed")
    with PostgresServer() as pg:
        yield pg.create_database("location")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, db_path):
    if request.param == "sqlite":
        target = db_path
    else:
        target = request.getfixturevalue("postgres_location")
    with LocationStore(target) as s:
        if request.param == "postgresql":
            with s._transaction(write=True) as conn:
                conn.exec_driver_sql("TRUNCATE location")
        yield s


@pytest.fixture
def registrar(store):
    return Registrar(store, RegistrarSettings(min_expires=60, max_expires=3600, default_expires=1800,
                                              max_contacts=3))


def contacts_of(store, now=T0, aor=AOR):
    return [b.contact for b in store.lookup(aor, now)]


# -- basic binding ------------------------------------------------------------------

def test_a_contact_with_a_byte_that_is_not_utf8_refreshes_its_binding(registrar, store):
    """Stored escaped (``\\xff``), found again by the next REGISTER (it was
    inserted a second time: a UNIQUE error and a 500)."""
    contact = "<sip:al\udcffce@192.168.1.10>"           # the parser's form of byte 0xff
    for cseq in (1, 2):
        out = registrar.register(register(contact, cseq=cseq), AOR, SOURCE, T0 + cseq)
        assert (out.status, out.reason) == (200, "OK")
    [binding] = store.lookup(AOR, T0)
    assert binding.contact == "sip:al\\xffce@192.168.1.10" and binding.cseq == 2
    out = registrar.register(register(contact, expires="0", cseq=3), AOR, SOURCE, T0 + 3)
    assert out.status == 200 and store.lookup(AOR, T0) == []


def test_register_binds_and_reports_the_binding(registrar, store):
    out = registrar.register(register("<sip:alice@192.168.1.10:5060>", expires="300",
                                      extra=(("user-agent", "phone/1.0"),)), AOR, SOURCE, T0)
    assert (out.status, out.reason) == (200, "OK")
    assert out.contact_values == ["<sip:alice@192.168.1.10:5060>;expires=300"]
    [b] = store.lookup(AOR, T0)
    assert b.contact == "sip:alice@192.168.1.10:5060"
    assert b.expires_at == T0 + 300 and b.q == 1.0
    assert (b.call_id, b.cseq) == ("reg-1", 1)
    assert b.received == "sip:203.0.113.7:40123;transport=udp"
    assert b.transport == "udp" and b.user_agent == "phone/1.0" and b.path is None


def test_default_expires_when_none_given(registrar, store):
    out = registrar.register(register("<sip:alice@10.0.0.1>"), AOR, SOURCE, T0)
    assert out.contact_values == ["<sip:alice@10.0.0.1>;expires=1800"]


def test_contact_expires_param_beats_expires_header(registrar, store):
    out = registrar.register(register("<sip:a@10.0.0.1>;expires=120", "<sip:a@10.0.0.2>", expires="600"),
                             AOR, SOURCE, T0)
    assert sorted(out.contact_values) == ["<sip:a@10.0.0.1>;expires=120", "<sip:a@10.0.0.2>;expires=600"]


def test_addr_spec_contact_params_belong_to_the_header(registrar, store):
    out = registrar.register(register("sip:a@10.0.0.1;expires=120"), AOR, SOURCE, T0)
    assert out.contact_values == ["<sip:a@10.0.0.1>;expires=120"]


def test_too_long_expires_is_shortened_to_max(registrar):
    out = registrar.register(register("<sip:a@10.0.0.1>", expires="99999999999999999999"), AOR, SOURCE, T0)
    assert out.contact_values == ["<sip:a@10.0.0.1>;expires=3600"]


def test_too_brief_is_423_with_min_expires_and_changes_nothing(registrar, store):
    out = registrar.register(register("<sip:a@10.0.0.1>;expires=30", "<sip:a@10.0.0.2>;expires=300"),
                             AOR, SOURCE, T0)
    assert (out.status, out.reason, out.min_expires) == (423, "Interval Too Brief", 60)
    assert contacts_of(store) == []


@pytest.mark.parametrize("expires", ["abc", "-5", "1.5", "", "٣٠٠", "Thu, 01 Dec 1994 16:00:00 GMT"])
def test_bad_expires_header_is_400(registrar, store, expires):
    out = registrar.register(register("<sip:a@10.0.0.1>", expires=expires), AOR, SOURCE, T0)
    assert (out.status, out.reason) == (400, "Invalid Expires")
    assert contacts_of(store) == []


def test_bad_expires_param_is_400(registrar):
    assert registrar.register(register("<sip:a@10.0.0.1>;expires=soon"), AOR, SOURCE, T0).status == 400
    assert registrar.register(register("<sip:a@10.0.0.1>;expires"), AOR, SOURCE, T0).status == 400


@pytest.mark.parametrize("contact", ["<sip:a@10.0.0.1", "<mailto:a@example.test>", "<sip:a@h:99999>",
                                     "<sip:a@h:²>", "<tel:+15551234>", "garbage"])
def test_bad_contact_is_400(registrar, store, contact):
    out = registrar.register(register(contact), AOR, SOURCE, T0)
    assert out.status == 400
    assert contacts_of(store) == []


@pytest.mark.parametrize("q, milli", [("0", 0), ("0.5", 500), ("0.25", 250), ("1", 1000), ("1.000", 1000),
                                      ("0.125", 125)])
def test_q_values(registrar, store, q, milli):
    registrar.register(register(f"<sip:a@10.0.0.1>;q={q}"), AOR, SOURCE, T0)
    assert store.lookup(AOR, T0)[0].q_milli == milli


@pytest.mark.parametrize("q", ["1.5", "2", "0.1234", "-0.1", "x", ""])
def test_bad_q_is_400(registrar, q):
    assert registrar.register(register(f"<sip:a@10.0.0.1>;q={q}"), AOR, SOURCE, T0).status == 400


# -- several contacts, refresh, removal --------------------------------------------------

def test_several_contacts_lookup_by_q_then_most_recent(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>;q=0.5", "<sip:a@10.0.0.2>;q=0.9"), AOR, SOURCE, T0)
    registrar.register(register("<sip:a@10.0.0.3>;q=0.5", call_id="other-phone"), AOR, SOURCE, T0 + 5)
    assert contacts_of(store, T0 + 5) == ["sip:a@10.0.0.2", "sip:a@10.0.0.3", "sip:a@10.0.0.1"]


def test_ok_lists_every_binding_of_the_aor_with_q(registrar):
    registrar.register(register("<sip:a@10.0.0.1>;q=0.5", expires="300"), AOR, SOURCE, T0)
    out = registrar.register(register("<sip:a@10.0.0.2>", expires="600", call_id="b"), AOR, SOURCE, T0 + 100)
    assert out.contact_values == ["<sip:a@10.0.0.2>;expires=600", "<sip:a@10.0.0.1>;expires=200;q=0.5"]


def test_refresh_extends_the_binding(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", expires="300", cseq=1), AOR, SOURCE, T0)
    registrar.register(register("<sip:a@10.0.0.1>", expires="300", cseq=2), AOR, SOURCE, T0 + 250)
    [b] = store.lookup(AOR, T0 + 400)
    assert (b.expires_at, b.cseq) == (T0 + 550, 2)


def test_expired_bindings_are_not_returned(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", expires="300"), AOR, SOURCE, T0)
    assert contacts_of(store, T0 + 299) == ["sip:a@10.0.0.1"]
    assert contacts_of(store, T0 + 300) == []


def test_unregister_one_contact_with_expires_zero(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>"), AOR, SOURCE, T0)
    out = registrar.register(register("<sip:a@10.0.0.1>;expires=0", cseq=2), AOR, SOURCE, T0 + 1)
    assert out.contact_values == ["<sip:a@10.0.0.2>;expires=1799"]
    assert contacts_of(store, T0 + 1) == ["sip:a@10.0.0.2"]


def test_unregister_of_unknown_contact_is_fine(registrar, store):
    out = registrar.register(register("<sip:a@10.0.0.9>", expires="0"), AOR, SOURCE, T0)
    assert (out.status, out.contact_values) == (200, [])


def test_wildcard_with_expires_zero_removes_everything(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>"), AOR, SOURCE, T0)
    registrar.register(register("<sip:a@10.0.0.3>", call_id="other"), AOR, SOURCE, T0)
    out = registrar.register(register("*", expires="0", cseq=2), AOR, SOURCE, T0 + 1)
    assert (out.status, out.contact_values) == (200, [])
    assert contacts_of(store, T0 + 1) == []


@pytest.mark.parametrize("contacts, expires", [
    (("*",), None), (("*",), "60"), (("*", "<sip:a@10.0.0.1>"), "0"), (("<sip:a@10.0.0.1>, *",), "0"),
])
def test_wildcard_needs_expires_zero_and_no_other_contact(registrar, store, contacts, expires):
    registrar.register(register("<sip:a@10.0.0.5>"), AOR, SOURCE, T0)
    out = registrar.register(register(*contacts, expires=expires, cseq=2), AOR, SOURCE, T0)
    assert (out.status, out.reason) == (400, "Invalid Wildcard Contact")
    assert contacts_of(store) == ["sip:a@10.0.0.5"]


def test_query_without_contact_returns_bindings_and_changes_nothing(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", expires="300"), AOR, SOURCE, T0)
    out = registrar.register(register(), AOR, SOURCE, T0 + 100)
    assert (out.status, out.contact_values) == (200, ["<sip:a@10.0.0.1>;expires=200"])
    assert store.lookup(AOR, T0 + 100)[0].expires_at == T0 + 300


def test_query_for_unknown_aor(registrar):
    out = registrar.register(register(), "nobody@example.test", SOURCE, T0)
    assert (out.status, out.contact_values) == (200, [])


# -- Call-ID / CSeq ordering (§10.3 step 7) ---------------------------------------------------

@pytest.mark.parametrize("cseq", [5, 4])
def test_same_call_id_with_old_cseq_fails_and_changes_nothing(registrar, store, cseq):
    registrar.register(register("<sip:a@10.0.0.1>", expires="300", cseq=5), AOR, SOURCE, T0)
    out = registrar.register(register("<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>", expires="900", cseq=cseq),
                             AOR, SOURCE, T0 + 10)
    assert out.status == 500
    [b] = store.lookup(AOR, T0 + 10)
    assert (b.contact, b.expires_at, b.cseq) == ("sip:a@10.0.0.1", T0 + 300, 5)


def test_old_cseq_cannot_unregister(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", cseq=5), AOR, SOURCE, T0)
    assert registrar.register(register("<sip:a@10.0.0.1>", expires="0", cseq=3), AOR, SOURCE, T0).status == 500
    assert registrar.register(register("*", expires="0", cseq=5), AOR, SOURCE, T0).status == 500
    assert contacts_of(store) == ["sip:a@10.0.0.1"]


def test_other_call_id_may_use_any_cseq(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", expires="300", cseq=50), AOR, SOURCE, T0)
    out = registrar.register(register("<sip:a@10.0.0.1>", expires="600", call_id="rebooted", cseq=1),
                             AOR, SOURCE, T0 + 1)
    assert out.status == 200
    [b] = store.lookup(AOR, T0 + 1)
    assert (b.call_id, b.cseq, b.expires_at) == ("rebooted", 1, T0 + 601)


def test_contact_listed_twice_in_one_request_is_not_a_replay(registrar, store):
    out = registrar.register(register("<sip:a@10.0.0.1>;q=0.1", "<sip:a@10.0.0.1>;q=0.7"), AOR, SOURCE, T0)
    assert out.status == 200
    assert [b.q for b in store.lookup(AOR, T0)] == [0.7]


def test_expired_binding_does_not_block_a_new_registration(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", expires="60", cseq=9), AOR, SOURCE, T0)
    out = registrar.register(register("<sip:a@10.0.0.1>", expires="60", cseq=1), AOR, SOURCE, T0 + 61)
    assert out.status == 200


# -- limits, NAT, Path ---------------------------------------------------------------------------------

def test_too_many_contacts_is_refused_atomically(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>"), AOR, SOURCE, T0)
    out = registrar.register(register("<sip:a@10.0.0.3>", "<sip:a@10.0.0.4>", call_id="x"), AOR, SOURCE, T0)
    assert out.status == 503
    assert sorted(contacts_of(store)) == ["sip:a@10.0.0.1", "sip:a@10.0.0.2"]


def test_ipv6_source_and_tcp_are_recorded(registrar, store):
    registrar.register(register("<sip:a@[2001:db8::1]:5060;transport=tcp>"), AOR, ("2001:db8::9", 5070, "TCP"), T0)
    [b] = store.lookup(AOR, T0)
    assert b.contact == "sip:a@[2001:db8::1]:5060;transport=tcp"
    assert b.received == "sip:[2001:db8::9]:5070;transport=tcp" and b.transport == "tcp"


def test_path_is_stored(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", extra=(("path", "<sip:edge1.test;lr>"),
                                                           ("path", "<sip:edge2.test;lr>"))), AOR, SOURCE, T0)
    assert store.lookup(AOR, T0)[0].path == "<sip:edge1.test;lr>, <sip:edge2.test;lr>"


def test_parsed_register_with_compact_contact_and_display_name(registrar, store):
    raw = (b"REGISTER sip:example.test SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n"
           b"f: <sip:alice@example.test>;tag=1\r\nt: <sip:alice@example.test>\r\n"
           b"i: abc\r\nCSeq: 7 REGISTER\r\n"
           b'm: "Smith, Alice" <sip:alice@10.0.0.1;ob>;expires=120;+sip.instance="<urn:uuid:1>"\r\n'
           b"Content-Length: 0\r\n\r\n")
    out = registrar.register(parse(raw), "alice@EXAMPLE.test", SOURCE, T0)
    assert out.contact_values == ["<sip:alice@10.0.0.1;ob>;expires=120"]
    assert contacts_of(store) == ["sip:alice@10.0.0.1;ob"]


def test_missing_or_bad_cseq_is_400(registrar):
    msg = register("<sip:a@10.0.0.1>")
    msg.set("cseq", "x REGISTER")
    assert registrar.register(msg, AOR, SOURCE, T0).status == 400
    msg.remove("cseq")
    assert registrar.register(msg, AOR, SOURCE, T0).status == 400
    msg = register("<sip:a@10.0.0.1>")
    msg.remove("call-id")
    assert registrar.register(msg, AOR, SOURCE, T0).status == 400


# -- the store itself --------------------------------------------------------------------------------------

def test_aor_domain_is_case_insensitive_user_is_not(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>"), "alice@EXAMPLE.Test", SOURCE, T0)
    assert contacts_of(store, aor="alice@example.test") == ["sip:a@10.0.0.1"]
    assert contacts_of(store, aor="Alice@example.test") == []
    assert normalize_aor("Bob@Example.TEST") == "Bob@example.test"


def test_two_stores_on_one_file_see_each_other(db_path):
    """Worker 1 handles the REGISTER, worker 2 the INVITE."""
    with LocationStore(db_path) as worker1, LocationStore(db_path) as worker2:
        Registrar(worker1).register(register("<sip:a@10.0.0.1>"), AOR, SOURCE, T0)
        assert contacts_of(worker2) == ["sip:a@10.0.0.1"]
        Registrar(worker2).register(register("<sip:a@10.0.0.1>", expires="0", cseq=2), AOR, SOURCE, T0)
        assert contacts_of(worker1) == []


def test_bindings_survive_a_restart(db_path):
    with LocationStore(db_path) as before:
        Registrar(before).register(register("<sip:a@10.0.0.1>", expires="300"), AOR, SOURCE, T0)
    with LocationStore(db_path) as after:
        assert contacts_of(after) == ["sip:a@10.0.0.1"]


def test_database_is_wal(db_path):
    LocationStore(db_path).close()
    assert sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_purge_removes_only_expired(registrar, store):
    registrar.register(register("<sip:a@10.0.0.1>", expires="100"), AOR, SOURCE, T0)
    registrar.register(register("<sip:b@10.0.0.2>", expires="1000"), "bob@example.test", SOURCE, T0)
    assert store.count(T0) == 2
    assert store.purge(T0 + 500) == 1
    assert store.count(T0) == 1 and contacts_of(store, T0, "bob@example.test") == ["sip:b@10.0.0.2"]


def test_lookup_uses_the_primary_key(db_path):
    LocationStore(db_path).close()
    plan = sqlite3.connect(db_path).execute(
        "EXPLAIN QUERY PLAN SELECT * FROM location WHERE aor = ? AND expires_at > ?", (AOR, T0)).fetchall()
    assert "USING PRIMARY KEY" in " ".join(row[-1] for row in plan)


def test_postgresql_schema_matches_and_migrates(postgres_location):
    """A store made before schema 3 gains ``instance``; opening twice changes nothing."""
    from sqlalchemy import create_engine, text
    engine = create_engine(postgres_location)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS location, location_schema"))
        conn.execute(text(
            "CREATE TABLE location (aor TEXT, contact TEXT, expires_at FLOAT NOT NULL, q_milli INTEGER NOT NULL,"
            " call_id TEXT NOT NULL, cseq BIGINT NOT NULL, received TEXT, transport TEXT, user_agent TEXT,"
            " path TEXT, registered_at FLOAT NOT NULL, nat SMALLINT NOT NULL DEFAULT 0, worker INTEGER,"
            " PRIMARY KEY (aor, contact))"))
        conn.execute(text("CREATE TABLE location_schema (version INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO location_schema VALUES (2)"))
        conn.execute(text("INSERT INTO location VALUES ('bob@example.test', 'sip:bob@192.0.2.20', 9e9, 1000,"
                          " 'c', 1, NULL, 'udp', NULL, NULL, 1.0, 0, NULL)"))
    for _ in range(2):
        with LocationStore(postgres_location) as store:
            (binding,) = store.lookup("bob@example.test", 0)
            assert binding.instance is None and not binding.nat
    with engine.begin() as conn:
        assert conn.execute(text("SELECT version FROM location_schema")).scalars().all() == [3]
        conn.execute(text("UPDATE location_schema SET version = 99"))
    with pytest.raises(LocationError, match="newer"):
        LocationStore(postgres_location)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE location, location_schema"))
    engine.dispose()


def test_a_lost_postgresql_connection_fails_one_request_then_recovers(postgres_location):
    """Each of the store's two connections (the signalling path's, the background
    one); a lookup does not even fail once."""
    from sqlalchemy import create_engine, text

    def restart_sessions():
        engine = create_engine(postgres_location)
        with engine.begin() as conn:       # what a PostgreSQL restart does to the instance's sessions
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        engine.dispose()

    with LocationStore(postgres_location) as store:
        with store._transaction(write=True) as conn:     # whatever the module's earlier tests left
            conn.exec_driver_sql("TRUNCATE location")
        store.lookup(AOR, T0)
        store.totals(T0)
        restart_sessions()
        assert store.lookup(AOR, T0) == []          # reconnected and asked again: the call goes on
        with pytest.raises(LocationError):
            store.totals(T0)
        assert store.totals(T0) == (0, 0)
        restart_sessions()
        registrar = Registrar(store)
        assert registrar.register(register("<sip:a@10.0.0.1>"), AOR, SOURCE, T0).status == 500
        assert registrar.register(register("<sip:a@10.0.0.1>"), AOR, SOURCE, T0).status == 200


def test_other_back_ends_are_refused_in_one_line():
    with pytest.raises(LocationError, match="only sqlite or postgresql"):
        LocationStore("mysql+pymysql://u@127.0.0.1/x")


def test_binding_expires_in():
    b = Binding(AOR, "sip:a@h", expires_at=T0 + 10.4)
    assert (b.expires_in(T0), b.expires_in(T0 + 10.3), b.expires_in(T0 + 11)) == (10, 1, 0)


def test_a_locked_database_gives_500_not_an_exception(db_path):
    with LocationStore(db_path, busy_timeout=0.05) as store:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            out = Registrar(store).register(register("<sip:a@10.0.0.1>"), AOR, SOURCE, T0)
            assert (out.status, out.reason) == (500, "Location Service Unavailable")
        finally:
            blocker.execute("ROLLBACK")
        # lookups keep working while a writer holds the lock (WAL)
        blocker.execute("BEGIN IMMEDIATE")
        assert store.lookup(AOR, T0) == []
        blocker.execute("ROLLBACK")


def test_unusable_path_is_a_location_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LocationError):
        LocationStore(tmp_path / "file" / "location.sqlite")


# -- settings ------------------------------------------------------------------------------------

def test_settings_validate():
    with pytest.raises(ValueError):
        RegistrarSettings(min_expires=600, default_expires=300)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"min_expires": 0}, RegistrarSettings)
    assert msgspec.convert({"max_contacts": 0}, RegistrarSettings).max_contacts == 0


def test_text_a_database_refuses_is_stored_escaped(store):
    """Not UTF-8 (a surrogate after parsing) or a NUL, which PostgreSQL's text refuses."""
    with store.edit(AOR, T0) as edit:
        edit.put(Binding(AOR, "sip:a@10.0.0.1", T0 + 60, user_agent="ph\udcffone\x00x", call_id="c\x00"))
    (binding,) = store.lookup(AOR, T0)
    assert (binding.user_agent, binding.call_id) == ("ph\\xffone\\x00x", "c\\x00")
