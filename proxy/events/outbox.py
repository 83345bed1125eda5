"""The proxy's durable local outbox: events wait here until Kafka has them.

The SIP path never waits for Kafka.  It ``append``s encoded events to an
in-memory list (a list append: cheap enough for several calls per SIP call at
thousands of calls per second); the runtime ``flush``es that list to SQLite in
one transaction per event-loop iteration; the publisher reads ``pending``
rows, delivers them and ``ack``s them, which deletes them.

SQLite in WAL mode with synchronous=NORMAL: a committed flush survives a crash
of the process (not necessarily a power cut: the last transactions before it
may roll back).  Events appended but not yet flushed die with the process: the
runtime flushes every few milliseconds, so that window is a few milliseconds.

Sequence numbers grow forever (AUTOINCREMENT), so ``ack(upto=n)`` can never
delete a row written after the reader looked.  One thread owns an Outbox.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    key   BLOB NOT NULL,
    value BLOB NOT NULL
)
"""


class Outbox:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        # Autocommit mode: transactions are opened explicitly where wanted.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._buffer: list[tuple[bytes, bytes]] = []
        # Kept in memory: COUNT(*) scans the table, and a long broker outage
        # can leave millions of rows while metrics ask every few seconds.
        self._stored = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def append(self, key: bytes, value: bytes) -> None:
        """Buffer one record in memory; durable after the next ``flush``."""
        self._buffer.append((key, value))

    def flush(self) -> int:
        """Write everything buffered in one transaction; returns how many rows."""
        if not self._buffer:
            return 0
        rows, self._buffer = self._buffer, []
        try:
            with self._db:  # BEGIN … COMMIT, ROLLBACK on error
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO outbox (key, value) VALUES (?, ?)", rows)
        except BaseException:
            # Keep them for the next attempt, ahead of anything appended since.
            self._buffer[:0] = rows
            raise
        self._stored += len(rows)
        return len(rows)

    def pending(self, limit: int) -> list[tuple[int, bytes, bytes]]:
        """Up to ``limit`` flushed, unacknowledged rows, oldest first: (seq, key, value)."""
        return self._db.execute(
            "SELECT seq, key, value FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def ack(self, seqs: Iterable[int] = (), *, upto: int | None = None) -> int:
        """Delete delivered rows: the given ``seqs``, and/or every row with seq <= ``upto``.
        Returns how many rows were deleted."""
        with self._db:
            self._db.execute("BEGIN")
            deleted = 0
            if upto is not None:
                deleted += self._db.execute("DELETE FROM outbox WHERE seq <= ?", (upto,)).rowcount
            seq_rows = [(seq,) for seq in seqs]
            if seq_rows:
                deleted += self._db.executemany("DELETE FROM outbox WHERE seq = ?", seq_rows).rowcount
        self._stored -= deleted
        return deleted

    def count(self) -> int:
        """Records not yet acknowledged: flushed rows plus the unflushed buffer."""
        return self._stored + len(self._buffer)

    @property
    def buffered(self) -> int:
        """Records appended but not yet flushed."""
        return len(self._buffer)

    def close(self) -> None:
        """Flush what is buffered and close the file."""
        try:
            self.flush()
        finally:
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
