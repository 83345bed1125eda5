"""The product's small SQL stores (provisioning, rates): one way to open and use them.

SQLite under the data dir by default; PostgreSQL or MySQL by URL.  Several
processes and the CLI open the same database at once, so SQLite runs in WAL
mode with a busy timeout, and writes take the write lock up front (BEGIN
IMMEDIATE) instead of failing half-way when two writers meet.

A store subclasses ``SqlStore``, names its error type and its change-log table,
and gets consistent reads, counted writes and one-line errors:  every change
bumps the store's single change-log row in the same transaction, so running
processes poll one integer (``_version()``) and reload only when it moved.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Self

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from . import clock

__all__ = ["SqlStore", "change_log_table", "count_rows", "sqlite_url", "tune_sqlite", "reason", "utcnow"]

BUSY_TIMEOUT_MS = 5000


def sqlite_url(path: str | os.PathLike) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def utcnow() -> datetime:
    return clock.utcnow()


def change_log_table(metadata: MetaData, name: str) -> Table:
    """The one-row change counter of a store (row id=1)."""
    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True),
        Column("version", BigInteger, nullable=False),
        Column("changed_at", DateTime(timezone=True), nullable=False),
    )


def tune_sqlite(engine: Engine, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
    """WAL + busy timeout on every connection; BEGIN IMMEDIATE for writes."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # take transaction control away from pysqlite so "begin" below decides
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # a deferred transaction that reads then writes can fail at once with
        # SQLITE_BUSY in WAL mode; writers queue on the lock instead
        immediate = conn.get_execution_options().get("sqlite_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def count_rows(conn: Connection, table: Table, where) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(where)).scalar() or 0)


def reason(exc: BaseException) -> str:
    """The driver's own message, on one line (SQLAlchemy appends SQL and a link)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(exc).__name__


class SqlStore:
    """Base of a SQL store.  Subclasses set the three class attributes; every
    database failure surfaces as ``error`` with a one-line message."""

    error: ClassVar[type[Exception]] = Exception
    what: ClassVar[str] = "database"          # "provisioning" -> "provisioning database URL: ..."
    change_log: ClassVar[Table]
    metadata: ClassVar[MetaData]              # the store's tables, change log included

    def __init__(self, url: str):
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise self.error(f"invalid database URL {url[:80]!r}") from None
        self._sqlite = parsed.get_backend_name() == "sqlite"
        try:
            if self._sqlite and parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self._engine = create_engine(parsed, pool_pre_ping=not self._sqlite)
        except (OSError, ImportError, SQLAlchemyError) as exc:
            # ImportError: the URL names a driver that is not installed
            raise self.error(
                f"{self.what} database {parsed.render_as_string(hide_password=True)}: {reason(exc)}") from None
        if self._sqlite:
            tune_sqlite(self._engine)
        self.url = parsed.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """One consistent read: a snapshot must not mix two versions."""
        with self._guard():
            conn = self._engine.connect()
            if not self._sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn, conn.begin():
                yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A change, counted in the change log in the same transaction."""
        with self._guard():
            with self._engine.connect() as conn:
                conn = conn.execution_options(sqlite_write=True)
                with conn.begin():
                    yield conn
                    log = self.change_log
                    conn.execute(update(log).where(log.c.id == 1)
                                 .values(version=log.c.version + 1, changed_at=utcnow()))

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self.error:
            raise
        except IntegrityError:
            # a concurrent writer won a race our pre-checks could not see
            raise self.error("conflicting change, already made by someone else; retry") from None
        except SQLAlchemyError as exc:
            raise self.error(f"{self.what} database {self.url}: {reason(exc)}") from None

    # -- schema ---------------------------------------------------------------------
    def create_schema(self) -> None:
        """Create missing tables (``metadata``) and the change-log row (idempotent)."""
        metadata = self.metadata
        with self._guard(), self._engine.connect() as conn:
            # under the write lock, so processes starting together do not race
            # each other's "does the table exist?" checks
            conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                if self._engine.dialect.name == "postgresql":
                    # PostgreSQL has no database-wide write lock: instances starting together
                    # would both create a table (duplicate pg_type row) or the change-log row
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('sipledger.schema', 0))"))
                metadata.create_all(conn)
                log = self.change_log
                if conn.execute(select(log.c.id)).first() is None:
                    conn.execute(insert(log).values(id=1, version=0, changed_at=utcnow()))

    def _version_in(self, conn: Connection) -> int:
        log = self.change_log
        value = conn.execute(select(log.c.version).where(log.c.id == 1)).scalar()
        if value is None:
            raise self.error(f"{self.what} database {self.url} has no schema; create it first")
        return int(value)

    def version(self) -> int:
        """The change counter; cheap enough to poll every second."""
        with self._read() as conn:
            return self._version_in(conn)
