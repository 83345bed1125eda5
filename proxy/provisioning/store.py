"""The provisioning store: domains, subscribers and aliases in SQL (OpenSIPS-like tables).

SQLite under the data dir by default; PostgreSQL or MySQL by URL (opened,
tuned and guarded by ``proxy.contract.sqldb.SqlStore``: WAL, busy timeout,
BEGIN IMMEDIATE for writes, one-line errors).

Every change also bumps the single ``change_log`` row in the same
transaction: running proxies poll that one integer (``version()``) and only
rebuild their in-memory snapshot when it moved.

Authentication lockouts (proxy/core/lockout.py) live here too, with a change
counter of their own (``auth_lockout_log``): a worker that locks a guesser out
writes the lock, the others and the CLI see it, and ``sipledger auth unlock``
ends it everywhere, without ever making the workers reload subscribers.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from proxy.core.digest import compute_ha1
from proxy.core.fraud import PARAMETERS as FRAUD_PARAMETERS
from proxy.core.fraud import FraudRule, FraudRuleError, validate
from proxy.infra.sqldb import SqlStore, sqlite_url, utcnow
from proxy.infra.sqldb import change_log_table as make_change_log
from proxy.infra.sqldb import count_rows as _count

from .models import (
    AliasEntry,
    Credentials,
    ProvisioningError,
    ProvisioningSnapshot,
    UserEntry,
    check_username,
    normalize_domain,
)

__all__ = ["LockoutEntry", "ProvisioningStore", "default_url", "metadata"]

DB_NAME = "provisioning.sqlite"
_MD5_HEX = re.compile(r"^[0-9a-fA-F]{32}$")

metadata = MetaData()

domain_table = Table(
    "domain", metadata,
    Column("id", Integer, primary_key=True),
    Column("domain", String(255), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

subscriber_table = Table(
    "subscriber", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("password", String(128), nullable=True),      # NULL when only hashes are kept
    Column("ha1", String(64), nullable=False),            # MD5(username:domain:password)
    Column("ha1_sha256", String(64), nullable=True),      # NULL for an imported MD5 HA1
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("username", "domain", name="subscriber_account"),
)

alias_table = Table(
    "alias", metadata,
    Column("id", Integer, primary_key=True),
    Column("alias_username", String(64), nullable=False),
    Column("alias_domain", String(255), nullable=False),
    Column("username", String(64), nullable=False),
    Column("domain", String(255), nullable=False),
    UniqueConstraint("alias_username", "alias_domain", name="alias_address"),
)

change_log_table = make_change_log(metadata, "change_log")

lockout_table = Table(
    "auth_lockout", metadata,
    Column("key", String(330), primary_key=True),     # ip:<address> or user:<user>@<domain>
    Column("until", Float, nullable=False),           # epoch seconds (time.time())
    Column("failures", Integer, nullable=False),      # the threshold that locked it
    Column("locked_at", DateTime(timezone=True), nullable=False),
)
lockout_log_table = make_change_log(metadata, "auth_lockout_log")

# fraud detection (proxy/core/fraud.py, docs/fraud.md): profiles of rules, and the alerts
# the workers raised (written like lockouts: queued on the request path, flushed at a poll)
fraud_profile_table = Table(
    "fraud_profile", metadata,
    Column("name", String(64), primary_key=True),
    Column("description", String(255), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

fraud_rule_table = Table(
    "fraud_rule", metadata,
    Column("rule_id", Integer, primary_key=True),
    Column("profile", String(64), nullable=False),
    Column("prefix", String(64), nullable=False),
    Column("start_hour", String(5), nullable=False),
    Column("end_hour", String(5), nullable=False),
    Column("days", String(64), nullable=False),
    *(Column(f"{parameter}_{level}", Integer, nullable=False, default=0)
      for parameter in FRAUD_PARAMETERS for level in ("warning", "critical")),
)

fraud_alert_table = Table(
    "fraud_alert", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),              # epoch seconds
    Column("severity", String(8), nullable=False),
    Column("parameter", String(32), nullable=False),
    Column("value", Integer, nullable=False),
    Column("threshold", Integer, nullable=False),
    Column("user", String(330), nullable=False),
    Column("number", String(64), nullable=False),
    Column("prefix", String(64), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("rule_id", Integer, nullable=False),
    Column("call_id", String(255), nullable=False),
    Column("action", String(16), nullable=False),     # none | refused | blocked
)

MAX_FRAUD_ALERTS = 10_000                             # rows kept; the oldest go first
MAX_SHARED_LOCKOUTS = 100_000                         # rows kept; the oldest locks go first


@dataclass(frozen=True, slots=True)
class LockoutEntry:
    key: str
    until: float
    failures: int


def default_url(data_dir: str | os.PathLike) -> str:
    return sqlite_url(Path(data_dir) / DB_NAME)


class ProvisioningStore(SqlStore):
    """Domains, subscribers and aliases.  Every method raises only ProvisioningError."""

    error = ProvisioningError
    what = "provisioning"
    change_log = change_log_table
    metadata = metadata

    # -- schema ---------------------------------------------------------------------

    # -- domains ---------------------------------------------------------------------
    def add_domain(self, domain: str) -> None:
        name = normalize_domain(domain)
        with self._write() as conn:
            if _domain_exists(conn, name):
                raise ProvisioningError(f"domain {name} already exists")
            conn.execute(insert(domain_table).values(domain=name, created_at=utcnow()))

    def del_domain(self, domain: str) -> None:
        """Refused while subscribers or aliases still use the domain: deleting it
        would silently turn their calls into foreign-domain calls."""
        name = normalize_domain(domain)
        with self._write() as conn:
            if not _domain_exists(conn, name):
                raise ProvisioningError(f"domain {name} does not exist")
            users = _count(conn, subscriber_table, subscriber_table.c.domain == name)
            aliases = _count(conn, alias_table, (alias_table.c.alias_domain == name)
                             | (alias_table.c.domain == name))
            if users or aliases:
                raise ProvisioningError(
                    f"domain {name} still has {users} user(s) and {aliases} alias(es); delete them first")
            conn.execute(delete(domain_table).where(domain_table.c.domain == name))

    def list_domains(self) -> list[str]:
        with self._read() as conn:
            return list(conn.execute(select(domain_table.c.domain).order_by(domain_table.c.domain)).scalars())

    # -- subscribers --------------------------------------------------------------------
    def add_user(self, user: str, domain: str, password: str | None = None, *,
                 ha1_only: bool = False, ha1: str | None = None) -> None:
        """Add a subscriber.  Either a ``password`` (kept in clear unless
        ``ha1_only``) or an existing MD5 ``ha1`` to import, which can then only
        answer MD5 challenges."""
        user, name = check_username(user), normalize_domain(domain)
        if (password is None) == (ha1 is None):
            raise ProvisioningError("give either a password or an HA1 hash")
        if ha1 is not None and not _MD5_HEX.match(ha1):
            raise ProvisioningError("HA1 must be 32 hexadecimal digits (MD5 of user:domain:password)")
        secrets = _secrets(user, name, password, ha1_only) if password is not None else {
            "password": None, "ha1": (ha1 or "").lower(), "ha1_sha256": None}
        with self._write() as conn:
            _require_domain(conn, name)
            if _user_exists(conn, user, name):
                raise ProvisioningError(f"user {user}@{name} already exists")
            if _alias_target(conn, user, name) is not None:
                raise ProvisioningError(f"{user}@{name} is an alias; delete the alias first")
            conn.execute(insert(subscriber_table).values(
                username=user, domain=name, created_at=utcnow(), **secrets))

    def del_user(self, user: str, domain: str) -> int:
        """Delete a subscriber and the aliases pointing at it; returns how many aliases went."""
        user, name = check_username(user), normalize_domain(domain)
        with self._write() as conn:
            if not _user_exists(conn, user, name):
                raise ProvisioningError(f"user {user}@{name} does not exist")
            conn.execute(delete(subscriber_table).where(
                (subscriber_table.c.username == user) & (subscriber_table.c.domain == name)))
            gone = conn.execute(delete(alias_table).where(
                (alias_table.c.username == user) & (alias_table.c.domain == name)))
            return gone.rowcount or 0

    def set_password(self, user: str, domain: str, password: str, *,
                     ha1_only: bool | None = None) -> None:
        """New password; the storage choice (clear or hashes only) is kept
        unless ``ha1_only`` says otherwise.  A user with an imported HA1 and no
        password switches to hashes only."""
        user, name = check_username(user), normalize_domain(domain)
        with self._write() as conn:
            row = conn.execute(select(subscriber_table.c.password).where(
                (subscriber_table.c.username == user) & (subscriber_table.c.domain == name))).first()
            if row is None:
                raise ProvisioningError(f"user {user}@{name} does not exist")
            keep_hashes_only = row.password is None if ha1_only is None else ha1_only
            conn.execute(update(subscriber_table).where(
                (subscriber_table.c.username == user) & (subscriber_table.c.domain == name))
                .values(**_secrets(user, name, password, keep_hashes_only)))

    def list_users(self, domain: str | None = None) -> list[UserEntry]:
        t = subscriber_table
        query = select(t.c.username, t.c.domain, t.c.password, t.c.ha1_sha256, t.c.created_at)
        if domain is not None:
            query = query.where(t.c.domain == normalize_domain(domain))
        with self._read() as conn:
            rows = conn.execute(query.order_by(t.c.domain, t.c.username)).all()
        return [UserEntry(r.username, r.domain, _storage(r.password, r.ha1_sha256), r.created_at)
                for r in rows]

    # -- aliases --------------------------------------------------------------------------
    def add_alias(self, alias_user: str, alias_domain: str, user: str, domain: str) -> None:
        """``alias_user@alias_domain`` reaches subscriber ``user@domain``.  The
        alias domain must be served (else the proxy would never treat it as
        local) and the target must be a subscriber, so aliases never chain."""
        alias_user, alias_dom = check_username(alias_user), normalize_domain(alias_domain)
        user, name = check_username(user), normalize_domain(domain)
        with self._write() as conn:
            _require_domain(conn, alias_dom)
            if _user_exists(conn, alias_user, alias_dom):
                raise ProvisioningError(f"{alias_user}@{alias_dom} is a user; an alias cannot shadow it")
            if _alias_target(conn, alias_user, alias_dom) is not None:
                raise ProvisioningError(f"alias {alias_user}@{alias_dom} already exists")
            if not _user_exists(conn, user, name):
                raise ProvisioningError(f"alias target {user}@{name} is not a user")
            conn.execute(insert(alias_table).values(
                alias_username=alias_user, alias_domain=alias_dom, username=user, domain=name))

    def del_alias(self, alias_user: str, alias_domain: str) -> None:
        alias_user, alias_dom = check_username(alias_user), normalize_domain(alias_domain)
        with self._write() as conn:
            gone = conn.execute(delete(alias_table).where(
                (alias_table.c.alias_username == alias_user) & (alias_table.c.alias_domain == alias_dom)))
            if not gone.rowcount:
                raise ProvisioningError(f"alias {alias_user}@{alias_dom} does not exist")

    def list_aliases(self) -> list[AliasEntry]:
        t = alias_table
        with self._read() as conn:
            rows = conn.execute(select(t.c.alias_username, t.c.alias_domain, t.c.username, t.c.domain)
                                .order_by(t.c.alias_domain, t.c.alias_username)).all()
        return [AliasEntry(*r) for r in rows]

    # -- authentication lockouts ----------------------------------------------------------
    def lockout_version(self) -> int:
        """The lockouts' own change counter (0 before the first lock)."""
        log = lockout_log_table
        with self._read() as conn:
            return int(conn.execute(select(log.c.version).where(log.c.id == 1)).scalar() or 0)

    def lockouts(self, now: float) -> list[LockoutEntry]:
        """Locks in force at ``now`` (epoch seconds), longest first."""
        t = lockout_table
        with self._read() as conn:
            rows = conn.execute(select(t.c.key, t.c.until, t.c.failures).where(t.c.until > now)
                                .order_by(t.c.until.desc())).all()
        return [LockoutEntry(r.key, float(r.until), int(r.failures)) for r in rows]

    def add_lockouts(self, locks: Iterable[tuple[str, float, int]], now: float) -> None:
        """Record locks (key, until, failures); expired rows go, and at most
        MAX_SHARED_LOCKOUTS stay however many sources an attacker rotates through."""
        t = lockout_table
        with self._lockout_write() as conn:
            for key, until, failures in locks:
                conn.execute(delete(t).where(t.c.key == key))
                conn.execute(insert(t).values(key=key[:330], until=until, failures=failures,
                                              locked_at=utcnow()))
            conn.execute(delete(t).where(t.c.until <= now))
            excess = _count(conn, t, t.c.until > now) - MAX_SHARED_LOCKOUTS
            if excess > 0:
                oldest = select(t.c.key).order_by(t.c.until).limit(excess).scalar_subquery()
                conn.execute(delete(t).where(t.c.key.in_(oldest)))

    def unlock(self, key: str) -> bool:
        """End a lock now (every worker drops it at its next reload); False if none."""
        t = lockout_table
        with self._lockout_write() as conn:
            return bool(conn.execute(delete(t).where(t.c.key == key)).rowcount)

    @contextmanager
    def _lockout_write(self) -> Iterator[Connection]:
        """A change of the lockouts, counted in their own log (not the provisioning one)."""
        log = lockout_log_table
        with self._guard(), self._engine.connect() as raw:
            conn = raw.execution_options(sqlite_write=True)
            with conn.begin():
                yield conn
                bumped = conn.execute(update(log).where(log.c.id == 1)
                                      .values(version=log.c.version + 1, changed_at=utcnow()))
                if not bumped.rowcount:
                    conn.execute(insert(log).values(id=1, version=1, changed_at=utcnow()))

    # -- fraud detection ----------------------------------------------------------------
    def add_fraud_profile(self, name: str, description: str = "") -> None:
        name = _profile_name(name)
        with self._write() as conn:
            if conn.execute(select(fraud_profile_table.c.name)
                            .where(fraud_profile_table.c.name == name)).first() is not None:
                raise ProvisioningError(f"fraud profile {name} already exists")
            conn.execute(insert(fraud_profile_table).values(name=name, description=description[:255],
                                                            created_at=utcnow()))

    def del_fraud_profile(self, name: str) -> int:
        """Delete a profile and its rules; the number of rules deleted."""
        with self._write() as conn:
            gone = conn.execute(delete(fraud_profile_table).where(fraud_profile_table.c.name == name))
            if not gone.rowcount:
                raise ProvisioningError(f"fraud profile {name} does not exist")
            return conn.execute(delete(fraud_rule_table)
                                .where(fraud_rule_table.c.profile == name)).rowcount or 0

    def list_fraud_profiles(self) -> list[tuple[str, str]]:
        t = fraud_profile_table
        with self._read() as conn:
            return [(r.name, r.description) for r in
                    conn.execute(select(t.c.name, t.c.description).order_by(t.c.name))]

    def add_fraud_rule(self, rule: FraudRule) -> int:
        """Store a rule (its ``rule_id`` is ignored); the id given to it."""
        try:
            validate(rule)
        except FraudRuleError as exc:
            raise ProvisioningError(str(exc)) from None
        values = {name: getattr(rule, name) for name in FraudRule.__slots__ if name != "rule_id"}
        with self._write() as conn:
            if conn.execute(select(fraud_profile_table.c.name)
                            .where(fraud_profile_table.c.name == rule.profile)).first() is None:
                raise ProvisioningError(f"fraud profile {rule.profile} does not exist")
            key = conn.execute(insert(fraud_rule_table).values(**values)).inserted_primary_key
            return int(key[0]) if key is not None else 0

    def del_fraud_rule(self, rule_id: int) -> None:
        with self._write() as conn:
            if not conn.execute(delete(fraud_rule_table).where(fraud_rule_table.c.rule_id == rule_id)).rowcount:
                raise ProvisioningError(f"fraud rule {rule_id} does not exist")

    def fraud_rules(self) -> list[FraudRule]:
        with self._read() as conn:
            return _fraud_rules(conn)

    def add_fraud_alerts(self, alerts: Iterable[dict]) -> None:
        """Record alerts (columns of fraud_alert); at most MAX_FRAUD_ALERTS stay."""
        t = fraud_alert_table
        rows = [{**row, "user": row["user"][:330], "number": row["number"][:64],
                 "call_id": row["call_id"][:255]} for row in alerts]
        if not rows:
            return
        with self._guard(), self._engine.connect() as raw:
            conn = raw.execution_options(sqlite_write=True)
            with conn.begin():
                conn.execute(insert(t), rows)
                newest = conn.execute(select(t.c.id).order_by(t.c.id.desc())
                                      .offset(MAX_FRAUD_ALERTS).limit(1)).scalar()
                if newest is not None:
                    conn.execute(delete(t).where(t.c.id <= newest))

    def fraud_alerts(self, *, since: float | None = None, user: str | None = None,
                     severity: str | None = None, limit: int = 100) -> list[dict]:
        """Alerts, newest first."""
        t = fraud_alert_table
        query = select(t)
        if since is not None:
            query = query.where(t.c.at >= since)
        if user is not None:
            query = query.where(t.c.user == user)
        if severity is not None:
            query = query.where(t.c.severity == severity)
        with self._read() as conn:
            rows = conn.execute(query.order_by(t.c.id.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    # -- the proxy's view ---------------------------------------------------------------
    def snapshot(self) -> ProvisioningSnapshot:
        """Everything the hot path needs, read in one transaction."""
        s, a = subscriber_table, alias_table
        with self._read() as conn:
            version = self._version_in(conn)
            domains = frozenset(conn.execute(select(domain_table.c.domain)).scalars())
            users = {
                (r.username, r.domain): Credentials(r.username, r.domain, r.password, r.ha1, r.ha1_sha256)
                for r in conn.execute(select(s.c.username, s.c.domain, s.c.password, s.c.ha1, s.c.ha1_sha256))
            }
            aliases = {
                (r.alias_username, r.alias_domain): (r.username, r.domain)
                for r in conn.execute(select(a.c.alias_username, a.c.alias_domain, a.c.username, a.c.domain))
            }
            fraud = tuple(_fraud_rules(conn))
        return ProvisioningSnapshot(int(version), domains, users, aliases, fraud)


# -- helpers -------------------------------------------------------------------------

def _fraud_rules(conn: Connection) -> list[FraudRule]:
    t = fraud_rule_table
    return [FraudRule(**dict(r)) for r in conn.execute(select(t).order_by(t.c.rule_id)).mappings()]


def _profile_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ProvisioningError(f"fraud profile {name!r}: 1-64 letters, digits, '_', '.', '-'")
    return name


def _secrets(user: str, domain: str, password: str, hashes_only: bool) -> dict[str, str | None]:
    if not password:
        raise ProvisioningError("password must not be empty")
    return {
        "password": None if hashes_only else password,
        "ha1": compute_ha1("MD5", user, domain, password),
        "ha1_sha256": compute_ha1("SHA-256", user, domain, password),
    }


def _storage(password: str | None, ha1_sha256: str | None) -> str:
    if password is not None:
        return "plaintext"
    return "ha1" if ha1_sha256 else "ha1-md5"


def _domain_exists(conn: Connection, name: str) -> bool:
    return _count(conn, domain_table, domain_table.c.domain == name) > 0


def _require_domain(conn: Connection, name: str) -> None:
    if not _domain_exists(conn, name):
        raise ProvisioningError(f"domain {name} is not served here; add it with 'domain add {name}'")


def _user_exists(conn: Connection, user: str, domain: str) -> bool:
    return _count(conn, subscriber_table, (subscriber_table.c.username == user)
                  & (subscriber_table.c.domain == domain)) > 0


def _alias_target(conn: Connection, user: str, domain: str):
    return conn.execute(select(alias_table.c.username).where(
        (alias_table.c.alias_username == user) & (alias_table.c.alias_domain == domain))).first()

