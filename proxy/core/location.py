"""The location service: AOR → contact bindings in SQL, shared by every worker
and, on a server database, by every proxy instance.

Like OpenSIPS usrloc in db_mode DB_ONLY (Kamailio ``db_mode=3``), the
database is the only copy: a REGISTER handled by worker 1 — or by another
proxy instance on the same PostgreSQL database — is visible to the next
INVITE anywhere, and bindings survive a restart.  There is deliberately no
cache: a cached binding would keep routing to a pinhole or instance that is
gone (docs/scale-out.md has the measured lookup costs that made a cache
unnecessary).

The store is opened on an SQLAlchemy URL (``[registrar] location_url``):
SQLite under the data dir by default (WAL, so lookups never wait for a
REGISTER being written), PostgreSQL (``postgresql+psycopg://``) for several
instances.  The schema is the same on both.  Times are wall-clock seconds
(``proxy.infra.clock.time()``, the project's shiftable wall clock), because
they are shared between processes and outlive them.

This module stores; the RFC 3261 §10.3 rules live in registrar.py and run
inside ``LocationStore.edit`` so each REGISTER is applied atomically: SQLite
takes the write lock up front (BEGIN IMMEDIATE), PostgreSQL a transaction
advisory lock on the AOR, so two instances registering one AOR queue up.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..contract.events import escape_text
from ..infra.sqldb import reason, sqlite_url, tune_sqlite

__all__ = ["Binding", "BindingEditor", "LocationError", "LocationStore", "normalize_aor"]

log = logging.getLogger(__name__)

DB_NAME = "location.sqlite"
BACKENDS = ("sqlite", "postgresql")
# 2: ``nat`` (the REGISTER's sender was behind a NAT) and ``worker`` (the
#    worker whose TCP connection the REGISTER came on)
# 3: ``instance`` (the Route to the proxy instance that owns the binding's
#    pinhole or connection, docs/scale-out.md); older stores gain the columns
SCHEMA_VERSION = 3

metadata = MetaData()
location = Table(
    "location", metadata,
    Column("aor", Text, primary_key=True),              # user@domain, domain lower-cased
    Column("contact", Text, primary_key=True),          # contact URI as the UA registered it
    Column("expires_at", Float, nullable=False),        # wall-clock seconds
    Column("q_milli", Integer, nullable=False),         # q x 1000, exact for ordering
    Column("call_id", Text, nullable=False),
    Column("cseq", BigInteger, nullable=False),
    Column("received", Text),                           # source of the REGISTER as a SIP URI (NAT)
    Column("transport", Text),
    Column("user_agent", Text),
    Column("path", Text),                               # Path header values (RFC 3327), comma-joined
    Column("registered_at", Float, nullable=False),
    Column("nat", SmallInteger, nullable=False, server_default="0"),  # sender behind a NAT
    Column("worker", Integer),                          # TCP: the worker owning the connection
    Column("instance", Text),                           # Route to the owning instance (scale-out)
    Index("location_expires", "expires_at"),
    sqlite_with_rowid=False,
)
# PostgreSQL has no user_version: the schema version lives in a one-row table
location_schema = Table("location_schema", MetaData(), Column("version", Integer, nullable=False))

_COLUMNS = tuple(location.c)
_KEY = (location.c.aor, location.c.contact)

# columns each schema version added, for stores made by an older version
_ADDED = {
    2: ("nat SMALLINT NOT NULL DEFAULT 0", "worker INTEGER"),
    3: ("instance TEXT",),
}

# The signalling path's statements (INVITE lookup, REGISTER edit): built once,
# compiled once per dialect, run on the driver connection (``_Driver``)
_AOR = location.c.aor == bindparam("aor")
_CONTACT = location.c.contact == bindparam("contact")
_HOT = {
    "lookup": select(*_COLUMNS).where(_AOR, location.c.expires_at > bindparam("now")),
    "expired": delete(location).where(_AOR, location.c.expires_at <= bindparam("now")),
    "bindings": select(*_COLUMNS).where(_AOR),
    "insert": insert(location).values({c.name: bindparam(c.name) for c in _COLUMNS}),
    "update": update(location).where(_AOR, _CONTACT).values(
        {c.name: bindparam(f"new_{c.name}") for c in _COLUMNS if c.name not in ("aor", "contact")}),
    "remove": delete(location).where(_AOR, _CONTACT),
    # one writer per AOR across every instance (SQLite: the file's write lock)
    "lock": select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("aor"), literal_column("0")))),
}


class _Driver:
    """The hot statements on one driver connection (sqlite3 / psycopg 3) in
    autocommit mode, with explicit transactions: SQLAlchemy's per-statement
    work (coercion, cache keys, result wrapping) cost 5-10x the query itself
    on SQLite (docs/scale-out.md), and it runs on the event loop."""

    def __init__(self, engine, sqlite: bool):
        self._engine = engine
        self._sqlite = sqlite
        self._raw = None
        self.error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._sql: dict[str, tuple[str, tuple[str, ...] | None]] = {}
        for name, stmt in _HOT.items():
            if sqlite and name == "lock":
                continue
            compiled = stmt.compile(dialect=engine.dialect)
            # qmark (SQLite) takes a tuple in order, pyformat (psycopg) the dict
            self._sql[name] = (str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None)

    def conn(self):
        if self._raw is None:
            raw = self._engine.raw_connection()
            if not self._sqlite:
                raw.driver_connection.autocommit = True     # SQLite: tune_sqlite already did
            self._raw = raw
        return self._raw.driver_connection

    def run(self, name: str, params: dict[str, object]):
        sql, order = self._sql[name]
        return self.conn().execute(sql, params if order is None else tuple(params[k] for k in order))

    def begin(self) -> None:
        # BEGIN IMMEDIATE: SQLite's write lock before reading, so two workers
        # registering the same AOR queue up instead of one failing mid-way
        self.conn().execute("BEGIN IMMEDIATE" if self._sqlite else "BEGIN")

    def commit(self) -> None:
        self.conn().execute("COMMIT")

    def rollback(self) -> None:
        try:
            self.conn().execute("ROLLBACK")
        except self.error:           # none open (a failed BEGIN), or the connection is gone
            self.drop()

    def lost(self) -> bool:
        """The server closed the connection (psycopg marks it closed; SQLite never is)."""
        return self._raw is not None and bool(getattr(self._raw.driver_connection, "closed", False))

    def drop(self) -> None:
        """Forget a connection that failed: the next statement reconnects."""
        if self._raw is not None:
            try:
                self._raw.invalidate()
            except Exception:        # already broken: nothing to give back
                pass
            self._raw = None


class LocationError(Exception):
    """The location database cannot be used (locked too long, unreachable, full …)."""


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
    instance: str | None = None        # Route value naming the instance that registered it

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
    """One AOR's live bindings inside an open write transaction.

    ``current`` is keyed by the contact as stored (``_text``): a contact with a
    byte that is not UTF-8 is stored escaped, so looking it up by the parsed
    string would miss its row and insert it twice (found by the fuzz test)."""

    def __init__(self, driver: _Driver, aor: str, current: dict[str, Binding]):
        self._driver = driver
        self.aor = aor
        self.current = current          # stored contact URI → Binding, updated as we write

    def get(self, contact: str) -> Binding | None:
        return self.current.get(_text(contact) or "")

    def put(self, binding: Binding) -> None:
        # the AOR is locked (see ``edit``) and ``current`` holds all its rows, so
        # update-or-insert is exact without a dialect's upsert syntax
        row = _row(binding)
        key = str(row["contact"])
        if key in self.current:
            self._driver.run("update", {"aor": row["aor"], "contact": key,
                                        **{f"new_{k}": v for k, v in row.items()}})
        else:
            self._driver.run("insert", row)
        self.current[key] = binding

    def remove(self, contact: str) -> None:
        key = _text(contact) or ""
        self._driver.run("remove", {"aor": self.aor, "contact": key})
        self.current.pop(key, None)

    def bindings(self) -> list[Binding]:
        return sorted(self.current.values(), key=preference)


class LocationStore:
    """One connection per process (or thread); several processes — and, on
    PostgreSQL, several proxy instances — share the database.

    ``target`` is an SQLAlchemy URL (``sqlite:///…``, ``postgresql+psycopg://…``)
    or, as before, the path of an SQLite file."""

    def __init__(self, target: str | Path, *, busy_timeout: float = 5.0):
        url = str(target) if "://" in str(target) else sqlite_url(target)
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise LocationError(f"invalid location database URL {url[:80]!r}") from None
        self.url = parsed.render_as_string(hide_password=True)
        self.backend = parsed.get_backend_name()
        self._sqlite = self.backend == "sqlite"
        self.path = Path(parsed.database) if self._sqlite and parsed.database else None
        try:
            if self.backend not in BACKENDS:
                raise LocationError(f"location database {self.url}: only {' or '.join(BACKENDS)} is supported")
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # bounded waits on both: the store is used on the workers' event loops
            ms = int(busy_timeout * 1000)
            connect_args = {"timeout": busy_timeout} if self._sqlite else {
                "connect_timeout": max(1, round(busy_timeout)),
                "options": f"-c statement_timeout={ms} -c lock_timeout={ms}"}
            self._engine = create_engine(parsed, connect_args=connect_args, pool_size=2,
                                         pool_pre_ping=not self._sqlite) if not self._sqlite else \
                create_engine(parsed, connect_args=connect_args)
            if self._sqlite:
                tune_sqlite(self._engine, busy_timeout_ms=int(busy_timeout * 1000))
            self._conn = self._engine.connect()
            self._create_schema()
            self._driver = _Driver(self._engine, self._sqlite)
            self._driver.conn()
        except (OSError, ImportError, SQLAlchemyError) as exc:
            raise LocationError(f"location database {self.url}: {reason(exc)}") from None

    @classmethod
    def in_data_dir(cls, data_dir: str | Path, **kwargs) -> "LocationStore":
        return cls(Path(data_dir) / DB_NAME, **kwargs)

    @classmethod
    def open(cls, url: str, data_dir: str | Path, **kwargs) -> "LocationStore":
        """``[registrar] location_url``, the SQLite file under the data dir when empty."""
        return cls(url, **kwargs) if url else cls.in_data_dir(data_dir, **kwargs)

    # -- schema ---------------------------------------------------------------------
    def _create_schema(self) -> None:
        with self._transaction(write=True) as conn:
            if not self._sqlite:
                # instances starting together: one creates, the others wait and see it
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('sipledger.location', 0))"))
            version = self._schema_version(conn)
            if version > SCHEMA_VERSION:
                raise LocationError(f"location database {self.url}: schema version {version} is newer "
                                    f"than this program's ({SCHEMA_VERSION})")
            metadata.create_all(conn)
            self._migrate(conn, version)
            self._set_schema_version(conn)

    def _schema_version(self, conn: Connection) -> int:
        if self._sqlite:
            return int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        location_schema.create(conn, checkfirst=True)
        return int(conn.execute(select(func.max(location_schema.c.version))).scalar() or 0)

    def _set_schema_version(self, conn: Connection) -> None:
        if self._sqlite:
            conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            conn.execute(delete(location_schema))
            conn.execute(insert(location_schema).values(version=SCHEMA_VERSION))

    def _migrate(self, conn: Connection, version: int) -> None:
        """Add the columns later versions introduced (a store at 0 was just created
        complete).  Checked by name too, so a half-migrated store is finished."""
        if self._sqlite:
            have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(location)")}
        else:
            have = {row[0] for row in conn.execute(text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'location' AND table_schema = current_schema()"))}
        for since in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            for column in _ADDED.get(since, ()):
                if column.split()[0] not in have:
                    conn.exec_driver_sql(f"ALTER TABLE location ADD COLUMN {column}")

    def close(self) -> None:
        self._driver.drop()
        self._conn.close()
        self._engine.dispose()

    def __enter__(self) -> "LocationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Connection]:
        """One transaction on the process' connection; every database failure
        becomes a one-line ``LocationError``.  SQLite writes take the write
        lock before reading (BEGIN IMMEDIATE), so two workers registering the
        same AOR queue up instead of one failing mid-way."""
        conn = self._conn
        if self._sqlite:
            conn.execution_options(sqlite_write=write)    # in place (SQLAlchemy 2): set for every transaction
        try:
            with conn.begin():
                yield conn
        except LocationError:
            raise
        except SQLAlchemyError as exc:
            raise LocationError(f"location database {self.url}: {reason(exc)}") from None

    # -- reads ----------------------------------------------------------------------
    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, best first (q, then most recent).

        Every INVITE to a local user runs this on the worker's event loop: one
        statement in autocommit mode (a single SELECT is consistent by itself),
        one round trip.  A connection the server closed (a PostgreSQL restart,
        a failover) is replaced at once and the read asked again, so the call
        does not fail for it; any other error (a timeout) is not retried."""
        driver = self._driver
        params = {"aor": normalize_aor(aor), "now": now}
        for attempt in (1, 2):
            try:
                rows = driver.run("lookup", params).fetchall()
                break
            except (driver.error, SQLAlchemyError) as exc:
                lost = driver.lost()
                driver.drop()                      # the next statement reconnects
                if not (lost and attempt == 1):
                    raise LocationError(f"location database {self.url}: {reason(exc)}") from None
        return sorted((_binding(r) for r in rows), key=preference)

    def nated(self, now: float, after: tuple[str, str] | None = None,
              limit: int | None = None) -> list[Binding]:
        """Live bindings registered from behind a NAT (the keep-alive's work list),
        in (aor, contact) order; a page of ``limit`` after ``after`` if given."""
        query = select(*_COLUMNS).where(location.c.nat == 1, location.c.expires_at > now)
        if after is not None:
            query = query.where(tuple_(*_KEY) > tuple_(*after))
        query = query.order_by(*_KEY)
        if limit is not None:
            query = query.limit(int(limit))
        with self._transaction() as conn:
            rows = conn.execute(query).all()
        return [_binding(r) for r in rows]

    def drop(self, aor: str, contact: str, registered_before: float) -> bool:
        """Remove one binding unless its phone registered again since
        ``registered_before`` (then it is alive, maybe behind a new pinhole).
        True when a row went."""
        with self._transaction(write=True) as conn:
            return conn.execute(delete(location).where(
                location.c.aor == aor, location.c.contact == _text(contact),
                location.c.registered_at < registered_before)).rowcount > 0

    def count(self, now: float) -> int:
        """Live bindings in total (for metrics)."""
        with self._transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(location)
                                    .where(location.c.expires_at > now)).scalar() or 0)

    def totals(self, now: float) -> tuple[int, int]:
        """(addresses of record, bindings) alive at ``now`` (for metrics)."""
        with self._transaction() as conn:
            users, contacts = conn.execute(
                select(func.count(location.c.aor.distinct()), func.count())
                .where(location.c.expires_at > now)).one()
        return int(users), int(contacts)

    # -- writes ----------------------------------------------------------------------
    @contextmanager
    def edit(self, aor: str, now: float) -> Iterator[BindingEditor]:
        """Change one AOR atomically: committed when the block ends, rolled
        back if it raises (the exception then propagates unchanged)."""
        aor = normalize_aor(aor)
        driver = self._driver
        try:
            driver.begin()
            if not self._sqlite:
                driver.run("lock", {"aor": aor})
            # expired rows are gone for good: drop them so they cannot take
            # part in the Call-ID/CSeq checks
            driver.run("expired", {"aor": aor, "now": now})
            rows = driver.run("bindings", {"aor": aor}).fetchall()
            editor = BindingEditor(driver, aor, {r[1]: _binding(r) for r in rows})
        except driver.error as exc:
            driver.rollback()
            raise LocationError(f"location database {self.url}: {reason(exc)}") from None
        try:
            yield editor
            driver.commit()
        except driver.error as exc:
            driver.rollback()
            raise LocationError(f"location database {self.url}: {reason(exc)}") from None
        except BaseException:
            driver.rollback()
            raise

    def purge(self, now: float) -> int:
        """Delete every expired binding; returns how many.  Any worker of any instance may run it."""
        with self._transaction(write=True) as conn:
            gone = conn.execute(delete(location).where(location.c.expires_at <= now)).rowcount
        if gone:
            log.debug("location: purged %d expired bindings", gone)
        return gone


def _binding(row) -> Binding:
    fields = list(row)
    fields[11] = bool(fields[11])                 # nat: stored as 0/1
    return Binding(*fields)


def _row(b: Binding) -> dict[str, object]:
    return {"aor": _text(b.aor), "contact": _text(b.contact), "expires_at": b.expires_at,
            "q_milli": b.q_milli, "call_id": _text(b.call_id), "cseq": b.cseq,
            "received": b.received, "transport": b.transport, "user_agent": _text(b.user_agent),
            "path": _text(b.path), "registered_at": b.registered_at, "nat": int(b.nat),
            "worker": b.worker, "instance": b.instance}


def _text(value: str | None) -> str | None:
    """The databases take valid UTF-8 only (PostgreSQL no NUL either); a byte a
    phone sent that is not UTF-8 (a surrogate after parsing) is stored as
    ``\\xNN``, as in call events."""
    if value is None or (value.isascii() and "\x00" not in value):
        return value
    return escape_text(value).replace("\x00", "\\x00")
