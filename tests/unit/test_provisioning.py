"""Provisioning store (SQLite in a tmp dir), snapshots and live reload."""
from __future__ import annotations

import sqlite3
from types import MappingProxyType

import pytest

from proxy.core.digest import compute_ha1
from proxy.provisioning.live import LiveProvisioning
from proxy.provisioning.models import (
    Credentials,
    ProvisioningError,
    ProvisioningSnapshot,
    parse_address,
)
from proxy.provisioning.store import ProvisioningStore, default_url

D = "example.test"


@pytest.fixture
def url(tmp_path):
    return default_url(tmp_path / "data")


@pytest.fixture
def store(url):
    s = ProvisioningStore(url)
    s.create_schema()
    s.add_domain(D)
    yield s
    s.close()


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ProvisioningError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- schema and database ----------------------------------------------------------------

def test_default_url_points_into_the_data_dir(tmp_path):
    assert default_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/provisioning.sqlite"


def test_create_schema_is_idempotent_and_sqlite_runs_in_wal(url, tmp_path):
    s = ProvisioningStore(url)
    s.create_schema()
    s.create_schema()
    assert s.version() == 0
    s.close()
    db = tmp_path / "data" / "provisioning.sqlite"
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"domain", "subscriber", "alias", "change_log"} <= tables


def test_missing_schema_is_a_clear_error(url):
    s = ProvisioningStore(url)
    assert "no such table" in error_of(s.version)


@pytest.mark.parametrize("bad", ["nonsense", "nosuchdialect://x/y"])
def test_bad_url(bad):
    error_of(ProvisioningStore, bad)


def test_missing_driver_is_a_one_line_error_without_the_password():
    message = error_of(ProvisioningStore, "postgresql+nosuchdriver://u:hunter2@db/prov")
    assert "hunter2" not in message


# -- domains ------------------------------------------------------------------------------

def test_domains(store):
    store.add_domain("Other.TEST")
    assert store.list_domains() == ["example.test", "other.test"]
    assert error_of(store.add_domain, "other.test") == "domain other.test already exists"
    store.del_domain("other.test")
    assert store.list_domains() == ["example.test"]
    assert error_of(store.del_domain, "other.test") == "domain other.test does not exist"


@pytest.mark.parametrize("bad", ["", "exa mple.test", "example.test:5060", "-bad.test", "a..b", "999.1.1.1",
                                 "user@example.test"])
def test_bad_domain_names(store, bad):
    assert "invalid domain" in error_of(store.add_domain, bad)


def test_ip_literal_domains(store):
    store.add_domain("192.0.2.1")
    store.add_domain("[2001:db8::1]")
    assert "192.0.2.1" in store.list_domains()


def test_domain_in_use_cannot_be_deleted(store):
    store.add_user("alice", D, "pw")
    assert "still has 1 user(s)" in error_of(store.del_domain, D)
    store.del_user("alice", D)
    store.del_domain(D)


# -- users -------------------------------------------------------------------------------

def test_plaintext_user(store):
    store.add_user("alice", D, "s3cret")
    creds = store.snapshot().credentials("alice", D)
    assert creds == Credentials("alice", D, "s3cret",
                                compute_ha1("MD5", "alice", D, "s3cret"),
                                compute_ha1("SHA-256", "alice", D, "s3cret"))
    [entry] = store.list_users()
    assert (entry.address, entry.storage) == ("alice@example.test", "plaintext")
    assert entry.created_at is not None


def test_ha1_only_user_keeps_no_password(store, tmp_path):
    store.add_user("bob", D, "s3cret", ha1_only=True)
    creds = store.snapshot().credentials("bob", D)
    assert creds.password is None
    assert creds.ha1_md5 == compute_ha1("MD5", "bob", D, "s3cret")
    assert creds.ha1_sha256 == compute_ha1("SHA-256", "bob", D, "s3cret")
    assert store.list_users()[0].storage == "ha1"
    files = list((tmp_path / "data").iterdir())              # the database and its WAL
    assert files and not any(b"s3cret" in f.read_bytes() for f in files)
    store.add_user("carl", D, "pl4intext")
    assert any(b"pl4intext" in f.read_bytes() for f in (tmp_path / "data").iterdir())


def test_imported_md5_ha1(store):
    ha1 = compute_ha1("MD5", "carol", D, "pw").upper()
    store.add_user("carol", D, ha1=ha1)
    creds = store.snapshot().credentials("carol", D)
    assert (creds.password, creds.ha1_md5, creds.ha1_sha256) == (None, ha1.lower(), None)
    assert store.list_users()[0].storage == "ha1-md5"


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give either a password or an HA1 hash"),
    ({"password": "x", "ha1": "0" * 32}, "give either a password or an HA1 hash"),
    ({"ha1": "xyz"}, "HA1 must be 32 hexadecimal digits"),
    ({"password": ""}, "password must not be empty"),
])
def test_add_user_argument_errors(store, kwargs, message):
    assert message in error_of(store.add_user, "alice", D, **kwargs)


def test_add_user_errors(store):
    store.add_user("alice", D, "pw")
    assert error_of(store.add_user, "alice", "EXAMPLE.test", "pw") == "user alice@example.test already exists"
    assert "domain nowhere.test is not served here" in error_of(store.add_user, "x", "nowhere.test", "pw")
    assert "invalid user name" in error_of(store.add_user, "al ice", D, "pw")
    assert "invalid user name" in error_of(store.add_user, "", D, "pw")


def test_usernames_are_case_sensitive(store):
    store.add_user("alice", D, "a")
    store.add_user("Alice", D, "b")
    snap = store.snapshot()
    assert snap.credentials("alice", D).password == "a"
    assert snap.credentials("Alice", D).password == "b"


def test_del_user(store):
    store.add_user("alice", D, "pw")
    store.add_alias("1001", D, "alice", D)
    assert store.del_user("alice", D) == 1
    assert store.list_users() == [] and store.list_aliases() == []
    assert error_of(store.del_user, "alice", D) == "user alice@example.test does not exist"


def test_set_password_keeps_the_storage_choice(store):
    store.add_user("alice", D, "old")
    store.add_user("bob", D, "old", ha1_only=True)
    store.set_password("alice", D, "new")
    store.set_password("bob", D, "new")
    snap = store.snapshot()
    assert snap.credentials("alice", D).password == "new"
    assert snap.credentials("alice", D).ha1_md5 == compute_ha1("MD5", "alice", D, "new")
    assert snap.credentials("bob", D).password is None
    assert snap.credentials("bob", D).ha1_sha256 == compute_ha1("SHA-256", "bob", D, "new")


def test_set_password_can_switch_to_ha1_only_and_fills_sha256_for_imports(store):
    store.add_user("alice", D, "old")
    store.add_user("carol", D, ha1="0" * 32)
    store.set_password("alice", D, "new", ha1_only=True)
    store.set_password("carol", D, "new")
    snap = store.snapshot()
    assert snap.credentials("alice", D).password is None
    assert snap.credentials("carol", D).ha1_sha256 == compute_ha1("SHA-256", "carol", D, "new")
    assert error_of(store.set_password, "nobody", D, "x") == "user nobody@example.test does not exist"


def test_list_users_by_domain(store):
    store.add_domain("other.test")
    store.add_user("zed", D, "pw")
    store.add_user("amy", D, "pw")
    store.add_user("bob", "other.test", "pw")
    assert [u.address for u in store.list_users()] == ["amy@example.test", "zed@example.test", "bob@other.test"]
    assert [u.address for u in store.list_users("OTHER.test")] == ["bob@other.test"]


# -- aliases ------------------------------------------------------------------------------

def test_aliases_numbers_and_other_served_domains(store):
    store.add_domain("other.test")
    store.add_user("alice", D, "pw")
    store.add_alias("1001", D, "alice", D)
    store.add_alias("alice.smith", "other.test", "alice", D)
    assert [(a.alias, a.target) for a in store.list_aliases()] == [
        ("1001@example.test", "alice@example.test"), ("alice.smith@other.test", "alice@example.test")]
    snap = store.snapshot()
    assert snap.resolve("1001", D) == ("alice", D)
    assert snap.resolve("alice.smith", "Other.Test") == ("alice", D)
    assert snap.resolve("alice", D) == ("alice", D)
    assert snap.resolve("nobody", D) is None
    assert snap.credentials("1001", D) is None           # aliases never authenticate


def test_alias_errors(store):
    store.add_user("alice", D, "pw")
    store.add_user("bob", D, "pw")
    store.add_alias("1001", D, "alice", D)
    assert error_of(store.add_alias, "1001", D, "bob", D) == "alias 1001@example.test already exists"
    assert "is a user" in error_of(store.add_alias, "bob", D, "alice", D)
    assert "not served" in error_of(store.add_alias, "1002", "nowhere.test", "alice", D)
    assert "is not a user" in error_of(store.add_alias, "1002", D, "nobody", D)
    assert "is not a user" in error_of(store.add_alias, "1002", D, "1001", D)     # no chains
    assert "is an alias" in error_of(store.add_user, "1001", D, "pw")
    store.del_alias("1001", D)
    assert error_of(store.del_alias, "1001", D) == "alias 1001@example.test does not exist"


# -- version and snapshots ------------------------------------------------------------------

def test_every_change_bumps_the_version_and_failures_do_not(store):
    v = store.version()
    store.add_user("alice", D, "pw")
    assert store.version() == v + 1
    error_of(store.add_user, "alice", D, "pw")
    assert store.version() == v + 1
    store.set_password("alice", D, "pw2")
    store.add_alias("1001", D, "alice", D)
    store.del_alias("1001", D)
    store.del_user("alice", D)
    assert store.version() == v + 5


def test_snapshot_is_consistent_and_immutable(store):
    store.add_user("alice", D, "pw")
    snap = store.snapshot()
    assert snap.version == store.version()
    assert snap.domains == frozenset({D}) and snap.is_local_domain("EXAMPLE.TEST")
    assert not snap.is_local_domain("other.test")
    assert isinstance(snap.users, MappingProxyType)
    with pytest.raises(TypeError):
        snap.users[("eve", D)] = None
    with pytest.raises(AttributeError):
        snap.version = 99
    store.add_user("bob", D, "pw")
    assert snap.credentials("bob", D) is None               # old snapshot unchanged


def test_snapshot_from_plain_dicts_is_frozen_too():
    snap = ProvisioningSnapshot(1, frozenset({D}), {("a", D): Credentials("a", D, "p", None, None)}, {})
    assert isinstance(snap.users, MappingProxyType) and isinstance(snap.aliases, MappingProxyType)
    assert ProvisioningSnapshot().resolve("a", D) is None


def test_two_stores_on_one_file(url, store):
    other = ProvisioningStore(url)
    other.add_user("alice", D, "pw")
    assert store.snapshot().credentials("alice", D) is not None
    assert other.version() == store.version()
    other.close()


# -- live reload ---------------------------------------------------------------------------------

def test_live_reload_only_when_version_moves_and_at_most_once_per_interval(url, store):
    live = LiveProvisioning(ProvisioningStore(url), poll_interval=1.0)
    assert live.maybe_reload(100.0) is False
    store.add_user("alice", D, "pw")                         # e.g. the CLI, another process
    assert live.maybe_reload(100.5) is False                 # not due yet
    assert live.snapshot.credentials("alice", D) is None
    assert live.maybe_reload(101.0) is True
    assert live.snapshot.credentials("alice", D).password == "pw"
    assert live.maybe_reload(102.0) is False


def test_live_keeps_the_old_snapshot_when_the_database_fails(url, store, tmp_path):
    store.add_user("alice", D, "pw")
    live_store = ProvisioningStore(url)
    live = LiveProvisioning(live_store, poll_interval=0.5)

    def broken():
        raise ProvisioningError("provisioning database: disk I/O error")
    live_store.version = broken
    assert live.maybe_reload(10.0) is False
    assert live.last_error == "provisioning database: disk I/O error"
    assert live.snapshot.credentials("alice", D) is not None
    del live_store.version
    store.add_user("bob", D, "pw")
    assert live.maybe_reload(11.0) is True and live.last_error is None


# -- address syntax ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("alice@Example.Test", ("alice", "example.test")),
    ("sip:1001@example.test", ("1001", "example.test")),
    (" +15551234@example.test ", ("+15551234", "example.test")),
    ("a%40b@example.test", ("a%40b", "example.test")),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["alice", "@example.test", "alice@", "al ice@example.test",
                                  "alice@exa_mple.test", "a<b@example.test", "a%zz@example.test"])
def test_parse_address_errors(text):
    error_of(parse_address, text)
