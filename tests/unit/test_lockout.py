"""The lockout table (proxy/core/lockout.py) and the [auth] keys that configure it."""
from __future__ import annotations

import re

import pytest

from proxy.core.lockout import Lockout, ip_key, user_key
from proxy.infra.config import AuthSettings, ConfigError, load

ALICE = user_key("alice", "example.test")


def test_failures_within_the_window_lock_and_the_lock_ends():
    table = Lockout(failures=3, user_failures=0, window_s=60, lock_s=600)
    assert table.failure("1.2.3.4", ALICE, 0) == [] and table.failure("1.2.3.4", ALICE, 1) == []
    assert table.failure("1.2.3.4", ALICE, 2) == [ip_key("1.2.3.4")]
    assert table.locked("1.2.3.4", None, 599) and not table.locked("5.6.7.8", None, 599)
    assert not table.locked("1.2.3.4", None, 602)


def test_failures_outside_the_window_are_forgotten():
    table = Lockout(failures=3, window_s=60)
    for t in (0, 50, 120, 170):                     # never 3 within 60 s
        assert table.failure("1.2.3.4", None, t) == []
    assert not table.locked("1.2.3.4", None, 171)


def test_user_lock_spares_the_source_it_last_succeeded_from():
    table = Lockout(failures=0, user_failures=2)
    table.success("192.0.2.10", ALICE)
    table.failure("203.0.113.1", ALICE, 0)
    assert table.failure("203.0.113.2", ALICE, 1) == [ALICE]
    assert table.locked("203.0.113.3", ALICE, 2) and not table.locked("192.0.2.10", ALICE, 2)


def test_the_table_stays_bounded_whatever_the_sources():
    table = Lockout(failures=1, user_failures=1, max_keys=100)
    for i in range(5000):
        table.failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", user_key(f"u{i}", "x"), 0)
        table.success(f"10.0.0.{i % 256}", user_key(f"u{i}", "x"))
    assert len(table._locks) <= 100 and len(table._counts) <= 100 and len(table._good_source) <= 100
    assert len(table.take_new_locks()) <= 100


def test_sync_adopts_the_shared_view_and_keeps_unshared_locks():
    table = Lockout(failures=1)
    table.failure("1.1.1.1", None, 0)                # shared already ...
    shared_lock = table.take_new_locks()[0]
    table.failure("2.2.2.2", None, 0)                # ... not yet
    table.sync({"ip:3.3.3.3": 900.0}, version=7)     # 1.1.1.1 was unlocked in the CLI; 3.3.3.3 by another worker
    assert shared_lock[0] == "ip:1.1.1.1" and table.synced_version == 7
    assert set(table.entries(1.0)) == {"ip:2.2.2.2", "ip:3.3.3.3"}


def test_auth_keys_load_from_toml(tmp_path):
    path = tmp_path / "sipledger.toml"
    path.write_text('[auth]\nalgorithms = ["MD5"]\nlockout_failures = 5\n'
                    '[[auth.per_domain]]\ndomain = "secure.test"\nalgorithms = ["SHA-256", "MD5"]\n'
                    '[[auth.per_user_agent]]\nmatch = "Yealink"\nalgorithms = ["SHA-256", "MD5"]\n')
    auth = load(path).auth
    assert auth.lockout_failures == 5 and auth.per_domain[0].domain == "secure.test"
    assert auth.per_user_agent[0].algorithms == ("SHA-256", "MD5")
    assert AuthSettings().algorithms == ("MD5",)     # one challenge by default


@pytest.mark.parametrize("text, key", [
    ('[[auth.per_domain]]\ndomain = "a.test"\nalgorithms = ["SHA-1"]\n', "auth.per_domain[0].algorithms"),
    ('[[auth.per_domain]]\ndomain = ""\nalgorithms = ["MD5"]\n', "auth.per_domain[0].domain"),
    ('[[auth.per_user_agent]]\nmatch = "(unclosed"\nalgorithms = ["MD5"]\n', "auth.per_user_agent[0].match"),
    ('[[auth.per_user_agent]]\nmatch = "x"\nalgorithms = []\n', "auth.per_user_agent[0].algorithms"),
    ('[auth]\nalgorithms = ["MD5", "MD5"]\n', "auth.algorithms"),
    ('[auth]\nlockout_window_s = 0\n', "auth.lockout_window_s"),
    ('[auth]\nlockout_failures = -1\n', "auth.lockout_failures"),
])
def test_bad_auth_keys_are_named(tmp_path, text, key):
    path = tmp_path / "sipledger.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"key '{key}'")):
        load(path)


def test_the_authenticator_takes_every_auth_setting():
    from proxy.core.digest import DigestAuthenticator
    from proxy.infra.config import AuthAlgorithmsForDomain
    settings = AuthSettings(lockout_failures=2, lockout_s=5.0,
                            per_domain=(AuthAlgorithmsForDomain("a.test", ("SHA-256",)),))
    auth = DigestAuthenticator.from_settings(b"k" * 32, settings, worker=3)
    assert (auth.lockout.failures, auth.lockout.lock_s, auth.worker) == (2, 5.0, 3)
    assert auth.policy.offered("a.test", None) == ("SHA-256",) and auth.policy.offered("b.test", None) == ("MD5",)
    assert set(auth.algorithms) == {"MD5", "SHA-256"}
