"""Two ways to reach ClickHouse behind one small interface.

* ``ChdbBackend(path)``: embedded ClickHouse (chdb) on a directory.  chdb
  allows ONE process per path (a second process fails to lock it) and, in one
  process, one path at a time: close a backend before opening another path.
  Inside the process it holds two connections to the same path, one for
  writes (inserts, DDL) and one for reads, each behind its own lock, so API
  queries do not wait for sink inserts.  Inserts go in as an Arrow IPC stream
  (~1M rows/s); results come back as Arrow tables.
* ``ServerBackend(host, port, database, user, password)``: a ClickHouse server
  (18.16 upward) through clickhouse-driver's native protocol, a small pool of
  connections.  Inserts pass rows as a parameter (columnar), never as inline
  ``VALUES`` text (which hangs on 18.16).

Both bind query parameters client-side with ``sqlbind.bind`` (``{name}``
placeholders): 18.16 has no server-side parameters.
"""
from __future__ import annotations

import abc
import io
import logging
import queue
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import ClickHouseSettings
from .sqlbind import bind

__all__ = ["Backend", "BackendError", "ChdbBackend", "ServerBackend", "open_backend"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# clickhouse-driver logs each failed connect with a traceback; BackendError says
# it in one line.  A NullHandler keeps that off a bare CLI's stderr, while a
# process that configures logging (api.serve) still gets the records.
logging.getLogger("clickhouse_driver").addHandler(logging.NullHandler())


class BackendError(RuntimeError):
    """ClickHouse refused a statement or could not be reached."""


def identifier(name: str) -> str:
    """A table/column/database name, checked and quoted (never user input)."""
    if not _IDENTIFIER.fullmatch(name):
        raise BackendError(f"invalid identifier {name!r}")
    return f"`{name}`"


class Backend(abc.ABC):
    kind: str
    database: str

    @abc.abstractmethod
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, OPTIMIZE, ...)."""

    @abc.abstractmethod
    def query_with_names(self, sql: str, params: Mapping[str, Any] | None = None
                         ) -> tuple[list[str], list[tuple]]:
        """Run a SELECT: (column names, rows as tuples)."""

    @abc.abstractmethod
    def insert(self, table: str, columns: Mapping[str, Sequence[Any]]) -> int:
        """Insert columnar data (one equally long list, or pyarrow array, per
        column); returns the row count."""

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        return self.query_with_names(sql, params)[1]

    def query_dicts(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        names, rows = self.query_with_names(sql, params)
        return [dict(zip(names, row)) for row in rows]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @staticmethod
    def _row_count(columns: Mapping[str, Sequence[Any]]) -> int:
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise BackendError(f"insert columns differ in length: {sorted(lengths)}")
        return lengths.pop() if lengths else 0


# -- chdb ------------------------------------------------------------------------

def _arrow_type(ch_type: str):
    import pyarrow as pa
    simple = {
        "String": pa.string(), "UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(),
        "UInt64": pa.uint64(), "Int8": pa.int8(), "Int16": pa.int16(), "Int32": pa.int32(),
        "Int64": pa.int64(), "Float32": pa.float32(), "Float64": pa.float64(),
    }
    if ch_type in simple:
        return simple[ch_type]
    if ch_type.startswith("DateTime(") or ch_type == "DateTime":
        return pa.uint32()                      # epoch seconds
    if match := re.fullmatch(r"Decimal\((\d+),\s*(\d+)\)", ch_type):
        return pa.decimal128(int(match[1]), int(match[2]))
    if match := re.fullmatch(r"Nullable\((.+)\)", ch_type):
        return _arrow_type(match[1])
    if match := re.fullmatch(r"Array\((.+)\)", ch_type):
        return pa.list_(_arrow_type(match[1]))
    raise BackendError(f"no Arrow mapping for ClickHouse type {ch_type}")


def _to_arrow(values, arrow_type):
    """A column as Arrow: Python values converted, Arrow arrays cast (C++, no Python per row)."""
    import pyarrow as pa
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values if values.type == arrow_type else values.cast(arrow_type)
    return pa.array(values, type=arrow_type)


def _locked_by_another_process(path: Path) -> bool:
    """ClickHouse holds an exclusive flock on <path>/status while it runs."""
    import fcntl
    try:
        with open(path / "status", "rb") as status:
            try:
                fcntl.flock(status, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(status, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


class ChdbBackend(Backend):
    kind = "chdb"

    def __init__(self, path: str | Path, database: str = "sipledger") -> None:
        from chdb.state import sqlitelike
        self.path = Path(path)
        self.database = database
        self.path.mkdir(parents=True, exist_ok=True)
        self._types: dict[str, dict[str, str]] = {}
        try:
            self._writer = sqlitelike.connect(str(self.path))
        except Exception as exc:
            if _locked_by_another_process(self.path):
                raise BackendError(
                    f"chdb at {self.path} is open in another process (chdb allows one process "
                    "per path: stop the API process (sipledger up / api.serve) first)") from None
            raise BackendError(f"chdb at {self.path}: {exc}") from None
        self._reader = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._writer.query(f"CREATE DATABASE IF NOT EXISTS {identifier(database)}")
            self._writer.query(f"USE {identifier(database)}")
            # cdr_call has a partition per day: a rebuild or a migration writes
            # months in one insert, past chdb's default of 100 partitions per
            # block (an 18.16 server has no such limit)
            self._writer.query("SET max_partitions_per_insert_block = 0")
            self._reader = sqlitelike.connect(str(self.path))
            self._reader.query(f"USE {identifier(database)}")
        except Exception as exc:
            self.close()
            raise BackendError(f"chdb at {self.path}: {exc}") from None

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        text = bind(sql, params)
        with self._write_lock:
            try:
                self._writer.query(text)
            except Exception as exc:
                raise BackendError(str(exc)) from None
        self._types.clear()

    def query_with_names(self, sql, params=None):
        text = bind(sql, params)
        with self._read_lock:
            if self._reader is None:
                raise BackendError("chdb backend is closed")
            try:
                table = self._reader.query(text, "ArrowTable")
            except Exception as exc:
                raise BackendError(str(exc)) from None
        names = list(table.column_names)
        if table.num_rows == 0:
            return names, []
        return names, list(zip(*(column.to_pylist() for column in table.columns)))

    def _column_types(self, table: str) -> dict[str, str]:
        if table not in self._types:
            rows = self.query("SELECT name, type FROM system.columns "
                              "WHERE database = {db} AND table = {table}",
                              {"db": self.database, "table": table})
            if not rows:
                raise BackendError(f"table {self.database}.{table} does not exist")
            self._types[table] = dict(rows)
        return self._types[table]

    def insert(self, table: str, columns: Mapping[str, Sequence[Any]]) -> int:
        import pyarrow as pa
        rows = self._row_count(columns)
        if rows == 0:
            return 0
        types = self._column_types(table)
        try:
            arrow = pa.table({name: _to_arrow(values, _arrow_type(types[name])) for name, values in columns.items()})
        except KeyError as exc:
            raise BackendError(f"table {table} has no column {exc.args[0]}") from None
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise BackendError(f"insert into {table}: {exc}") from None
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, arrow.schema) as writer:
            writer.write_table(arrow)
        # optimize_on_insert=0: a ReplacingMergeTree block is stored as it comes
        # instead of being deduplicated on the way in (~1.5x the rows/s here);
        # duplicates collapse at merges, and every query deduplicates anyway
        statement = (f"INSERT INTO {identifier(table)} "
                     f"({', '.join(identifier(name) for name in columns)}) SETTINGS optimize_on_insert = 0")
        with self._write_lock:
            try:
                with self._writer.send_insert(statement, "ArrowStream") as inserter:
                    inserter.append(sink.getbuffer())
                    inserter.finish()
            except Exception as exc:
                raise BackendError(f"insert into {table}: {exc}") from None
        return rows

    def close(self) -> None:
        for attr, lock in (("_reader", self._read_lock), ("_writer", self._write_lock)):
            with lock:
                conn = getattr(self, attr, None)
                setattr(self, attr, None)
                if conn is not None:
                    conn.close()

    def __repr__(self) -> str:
        return f"ChdbBackend({str(self.path)!r}, database={self.database!r})"


# -- ClickHouse server (clickhouse-driver) ---------------------------------------

class ServerBackend(Backend):
    kind = "server"

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, database: str = "sipledger",
                 user: str = "default", password: str = "", *, pool_size: int = 4,
                 connect_timeout: float = 5.0, send_receive_timeout: float = 60.0) -> None:
        self.host, self.port, self.database = host, port, database
        self._options = dict(host=host, port=port, user=user, password=password,
                             connect_timeout=connect_timeout,
                             send_receive_timeout=send_receive_timeout,
                             compression="lz4", client_name="sipledger")
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._closed = False
        # the database must exist before clients can select it
        bootstrap = self._new_client(database=None)
        try:
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {identifier(database)}")
        except Exception as exc:
            raise BackendError(f"ClickHouse server {host}:{port}: {exc}") from None
        finally:
            bootstrap.disconnect()

    def _new_client(self, database: str | None):
        from clickhouse_driver import Client
        options = dict(self._options)
        if database:
            options["database"] = database
        return Client(**options)

    def _run(self, fn):
        if self._closed:
            raise BackendError("server backend is closed")
        self._slots.acquire()
        try:
            try:
                client = self._pool.get_nowait()
            except queue.Empty:
                client = self._new_client(self.database)
            try:
                result = fn(client)
            except Exception as exc:
                client.disconnect()     # a failed connection is not reused half-way
                raise BackendError(f"ClickHouse server {self.host}:{self.port}: {exc}") from None
            self._pool.put(client)
            return result
        finally:
            self._slots.release()

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        text = bind(sql, params)
        self._run(lambda client: client.execute(text))

    def query_with_names(self, sql, params=None):
        text = bind(sql, params)
        rows, types = self._run(lambda client: client.execute(text, with_column_types=True))
        return [name for name, _ in types], [tuple(row) for row in rows]

    def insert(self, table: str, columns: Mapping[str, Sequence[Any]]) -> int:
        rows = self._row_count(columns)
        if rows == 0:
            return 0
        statement = (f"INSERT INTO {identifier(table)} "
                     f"({', '.join(identifier(name) for name in columns)}) VALUES")
        # Arrow columns (pyarrow arrays) as Python lists: the driver's columnar input
        data = [values.to_pylist() if hasattr(values, "to_pylist") else list(values)
                for values in columns.values()]
        self._run(lambda client: client.execute(statement, data, columnar=True))
        return rows

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._pool.get_nowait().disconnect()
            except queue.Empty:
                return

    def __repr__(self) -> str:
        return f"ServerBackend({self.host}:{self.port}, database={self.database!r})"


def open_backend(settings: ClickHouseSettings, data_dir: Path) -> Backend:
    """The back end ``[clickhouse]`` configures (chdb under the data dir by default)."""
    if settings.backend == "server":
        return ServerBackend(settings.host, settings.port, settings.database,
                             settings.user, settings.password)
    return ChdbBackend(settings.chdb_path(data_dir), settings.database)
