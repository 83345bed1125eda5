"""The location service: AOR → contact bindings in SQLite, shared by every worker.

Like OpenSIPS usrloc in db_mode, the database is the only copy: a REGISTER
handled by worker 1 is visible to an INVITE on worker 2 at once, and bindings
survive a restart.  The file lives under the data dir in WAL mode, so lookups
(one per INVITE, one primary-key range read) never wait for a REGISTER being
written.  Times are wall-clock seconds (``proxy.infra.clock.time()``, the
project's shiftable wall clock), because they are shared between processes and
outlive them.

This module stores; the RFC 3261 §10.3 rules live in registrar.py and run
inside ``LocationStore.edit`` so each REGISTER is applied atomically.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..contract.events import escape_text

__all__ = ["Binding", "BindingEditor", "LocationError", "LocationStore", "normalize_aor"]

log = logging.getLogger(__name__)

DB_NAME = "location.sqlite"
# 2: ``nat`` (the REGISTER's sender was behind a NAT) and ``worker`` (the
#    worker whose TCP connection the REGISTER came on); files at 1 gain them
SCHEMA_VERSION = 2

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS location (
        aor           TEXT    NOT NULL,     -- user@domain, domain lower-cased
        contact       TEXT    NOT NULL,     -- contact URI as the UA registered it
        expires_at    REAL    NOT NULL,     -- wall-clock seconds
        q_milli       INTEGER NOT NULL,     -- q x 1000, exact for ordering
        call_id       TEXT    NOT NULL,
        cseq          INTEGER NOT NULL,
        received      TEXT,                 -- source of the REGISTER as a SIP URI (NAT)
        transport     TEXT,
        user_agent    TEXT,
        path          TEXT,                 -- Path header values (RFC 3327), comma-joined
        registered_at REAL    NOT NULL,
        nat           INTEGER NOT NULL DEFAULT 0,   -- sender behind a NAT (proxy/core/nat.py)
        worker        INTEGER,              -- TCP: the worker owning the registration connection
        PRIMARY KEY (aor, contact)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS location_expires ON location (expires_at)",
)

_COLUMNS = ("aor, contact, expires_at, q_milli, call_id, cseq, received, transport, "
            "user_agent, path, registered_at, nat, worker")

# columns each schema version added, for files made by an older version
_ADDED = {
    2: ("nat INTEGER NOT NULL DEFAULT 0", "worker INTEGER"),
}


class LocationError(Exception):
    """The location database cannot be used (locked too long, unreadable, full …)."""


def normalize_aor(aor: str) -> str:
    """``alice@Example.TEST`` → ``alice@example.test``: the user part is
    case-sensitive in SIP, the host is not."""
    user, at, domain = aor.strip().rpartition("@")
    return f"{user}@{domain.lower()}" if at else domain.lower()


@dataclass(frozen=True, slots=True)
class Binding:
    aor: str
    contact: str
    expires_at: float
    q_milli: int = 1000
    call_id: str = ""
    cseq: int = 0
    received: str | None = None
    transport: str | None = None
    user_agent: str | None = None
    path: str | None = None
    registered_at: float = 0.0
    nat: bool = False                  # behind a NAT: reach it at ``received`` (and keep it alive)
    worker: int | None = None          # TCP: the worker whose connection the REGISTER came on

    @property
    def q(self) -> float:
        return self.q_milli / 1000

    def expires_in(self, now: float) -> int:
        """Whole seconds left, at least 1 while the binding is alive."""
        return max(1, round(self.expires_at - now)) if self.expires_at > now else 0


def preference(binding: Binding) -> tuple[int, float]:
    """Sort key: highest q first, then the most recently registered
    (OpenSIPS' order for equal q)."""
    return (-binding.q_milli, -binding.registered_at)


class BindingEditor:
    """One AOR's live bindings inside an open write transaction."""

    def __init__(self, conn: sqlite3.Connection, aor: str, current: dict[str, Binding]):
        self._conn = conn
        self.aor = aor
        self.current = current          # contact URI → Binding, updated as we write

    def put(self, binding: Binding) -> None:
        self._conn.execute(f"INSERT OR REPLACE INTO location ({_COLUMNS}) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _row(binding))
        self.current[binding.contact] = binding

    def remove(self, contact: str) -> None:
        self._conn.execute("DELETE FROM location WHERE aor = ? AND contact = ?", (self.aor, _text(contact)))
        self.current.pop(contact, None)

    def bindings(self) -> list[Binding]:
        return sorted(self.current.values(), key=preference)


class LocationStore:
    """One connection per process (or thread); several processes may share the file."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are opened explicitly below, so a
            # REGISTER's read-check-write runs under one write lock
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._create_schema()
        except (OSError, sqlite3.Error) as exc:
            raise LocationError(f"location database {self.path}: {exc}") from None

    @classmethod
    def in_data_dir(cls, data_dir: str | Path, **kwargs) -> "LocationStore":
        return cls(Path(data_dir) / DB_NAME, **kwargs)

    def _create_schema(self) -> None:
        with self._transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} is newer than this "
                                            f"program's ({SCHEMA_VERSION})")
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._migrate(version)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _migrate(self, version: int) -> None:
        """Add the columns later versions introduced (a file at 0 was just created
        complete).  Checked by name too, so a half-migrated file is finished."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(location)")}
        for since in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            for column in _ADDED.get(since, ()):
                if column.split()[0] not in have:
                    self._conn.execute(f"ALTER TABLE location ADD COLUMN {column}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "LocationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE: take the write lock before reading, so two workers
        # registering the same AOR queue up instead of one failing mid-way
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            # also after a failed COMMIT, which leaves the transaction open
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise LocationError(f"location database {self.path}: {exc}") from None

    # -- reads ----------------------------------------------------------------------
    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, best first (q, then most recent)."""
        with self._errors():
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM location WHERE aor = ? AND expires_at > ?",
                (normalize_aor(aor), now)).fetchall()
        return sorted((_binding(r) for r in rows), key=preference)

    def nated(self, now: float, after: tuple[str, str] | None = None,
              limit: int | None = None) -> list[Binding]:
        """Live bindings registered from behind a NAT (the keep-alive's work list),
        in (aor, contact) order; a page of ``limit`` after ``after`` if given."""
        where = "nat = 1 AND expires_at > ?"
        args: tuple[object, ...] = (now,)
        if after is not None:
            where += " AND (aor, contact) > (?, ?)"
            args += after
        page = f" LIMIT {int(limit)}" if limit is not None else ""
        with self._errors():
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM location WHERE {where} ORDER BY aor, contact{page}",
                args).fetchall()
        return [_binding(r) for r in rows]

    def drop(self, aor: str, contact: str, registered_before: float) -> bool:
        """Remove one binding unless its phone registered again since
        ``registered_before`` (then it is alive, maybe behind a new pinhole).
        True when a row went."""
        with self._errors():
            return self._conn.execute(
                "DELETE FROM location WHERE aor = ? AND contact = ? AND registered_at < ?",
                (aor, _text(contact), registered_before)).rowcount > 0

    def count(self, now: float) -> int:
        """Live bindings in total (for metrics)."""
        with self._errors():
            return self._conn.execute("SELECT count(*) FROM location WHERE expires_at > ?",
                                      (now,)).fetchone()[0]

    def totals(self, now: float) -> tuple[int, int]:
        """(addresses of record, bindings) alive at ``now`` (for metrics)."""
        with self._errors():
            users, contacts = self._conn.execute(
                "SELECT count(DISTINCT aor), count(*) FROM location WHERE expires_at > ?", (now,)).fetchone()
        return users, contacts

    # -- writes ----------------------------------------------------------------------
    @contextmanager
    def edit(self, aor: str, now: float) -> Iterator[BindingEditor]:
        """Change one AOR atomically: committed when the block ends, rolled
        back if it raises (the exception then propagates unchanged)."""
        aor = normalize_aor(aor)
        with self._errors(), self._transaction():
            # expired rows are gone for good: drop them so they cannot take
            # part in the Call-ID/CSeq checks
            self._conn.execute("DELETE FROM location WHERE aor = ? AND expires_at <= ?", (aor, now))
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM location WHERE aor = ?", (aor,))
            yield BindingEditor(self._conn, aor, {r[1]: _binding(r) for r in rows})

    def purge(self, now: float) -> int:
        """Delete every expired binding; returns how many.  Any worker may run it."""
        with self._errors():
            gone = self._conn.execute("DELETE FROM location WHERE expires_at <= ?", (now,)).rowcount
        if gone:
            log.debug("location: purged %d expired bindings", gone)
        return gone


def _binding(row: tuple) -> Binding:
    fields = list(row)
    fields[-2] = bool(fields[-2])                 # nat: stored as 0/1
    return Binding(*fields)


def _row(b: Binding) -> tuple:
    return (_text(b.aor), _text(b.contact), b.expires_at, b.q_milli, _text(b.call_id), b.cseq,
            b.received, b.transport, _text(b.user_agent), _text(b.path), b.registered_at,
            int(b.nat), b.worker)


def _text(value: str | None) -> str | None:
    """SQLite takes UTF-8 only; a byte a phone sent that is not UTF-8 (a
    surrogate after parsing) is stored as ``\\xNN``, as in call events."""
    if value is None or value.isascii():
        return value
    return escape_text(value)
