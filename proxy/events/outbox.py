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

Kept until archived (docs/operations.md).  Under a memory-only broker an
acknowledged event is not safe yet: it dies with the broker until the archive
has it.  Then the publisher ``keep``s a delivered row instead of deleting it,
stamped with where the broker put it (partition, offset) and the broker's
epoch (proxy/infra/epoch.py); ``trim`` deletes the rows the archiver's
committed position has passed, in that epoch; ``resend_other_epochs`` makes
rows of an earlier broker pending again (the new one never had them or lost
them).  Kept rows are not ``pending`` and not in ``count``.

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
# added for the archive: NULL until delivered and kept (files of older versions get them)
_KEPT_COLUMNS = (("part", "INTEGER"), ("off", "INTEGER"), ("epoch", "TEXT"))
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE epoch IS NULL",
    "CREATE INDEX IF NOT EXISTS outbox_kept ON outbox (epoch, part, off) WHERE epoch IS NOT NULL",
)


class Outbox:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        # Autocommit mode: transactions are opened explicitly where wanted.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        for name, kind in _KEPT_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {kind}")
        for index in _INDEXES:
            self._db.execute(index)
        self._buffer: list[tuple[bytes, bytes]] = []
        # Kept in memory: COUNT(*) scans the table, and a long broker outage
        # can leave millions of rows while metrics ask every few seconds.
        self._stored = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self._kept = self._db.execute("SELECT COUNT(*) FROM outbox WHERE epoch IS NOT NULL").fetchone()[0]

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
        """Up to ``limit`` flushed rows not yet delivered (nor kept), oldest first: (seq, key, value)."""
        return self._db.execute(
            "SELECT seq, key, value FROM outbox WHERE epoch IS NULL ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def ack(self, seqs: Iterable[int] = (), *, upto: int | None = None) -> int:
        """Delete delivered rows: the given ``seqs``, and/or every row with seq <= ``upto``.
        Returns how many rows were deleted."""
        with self._db:
            self._db.execute("BEGIN")
            deleted = 0
            if upto is not None:
                deleted += self._db.execute("DELETE FROM outbox WHERE seq <= ? AND epoch IS NULL",
                                            (upto,)).rowcount
            seq_rows = [(seq,) for seq in seqs]
            if seq_rows:
                deleted += self._db.executemany("DELETE FROM outbox WHERE seq = ? AND epoch IS NULL",
                                                seq_rows).rowcount
        self._stored -= deleted
        return deleted

    def keep(self, placed: Iterable[tuple[int, int, int]], epoch: str) -> int:
        """Delivered rows stay until archived: (seq, partition, offset) each, in
        broker ``epoch``.  Returns how many rows were marked."""
        rows = [(partition, offset, epoch, seq) for seq, partition, offset in placed]
        if not rows:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            marked = self._db.executemany(
                "UPDATE outbox SET part = ?, off = ?, epoch = ? WHERE seq = ? AND epoch IS NULL", rows).rowcount
        self._kept += marked
        return marked

    def trim(self, epoch: str, next_offsets: dict[int, int]) -> int:
        """Delete kept rows of ``epoch`` below the archiver's committed next
        offset of their partition; returns how many."""
        deleted = 0
        with self._db:
            self._db.execute("BEGIN")
            for partition, offset in next_offsets.items():
                deleted += self._db.execute(
                    "DELETE FROM outbox WHERE epoch = ? AND part = ? AND off < ?",
                    (epoch, partition, offset)).rowcount
        self._stored -= deleted
        self._kept -= deleted
        return deleted

    def resend_other_epochs(self, epoch: str) -> int:
        """Kept rows delivered to another broker incarnation become pending again."""
        with self._db:
            self._db.execute("BEGIN")
            moved = self._db.execute(
                "UPDATE outbox SET part = NULL, off = NULL, epoch = NULL "
                "WHERE epoch IS NOT NULL AND epoch != ?", (epoch,)).rowcount
        self._kept -= moved
        return moved

    def drop_kept_beyond(self, max_kept: int) -> int:
        """Delete the oldest kept rows above ``max_kept`` (the archive is not
        keeping up or not running); returns how many."""
        excess = self._kept - max_kept
        if excess <= 0:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            deleted = self._db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE epoch IS NOT NULL "
                "ORDER BY seq LIMIT ?)", (excess,)).rowcount
        self._stored -= deleted
        self._kept -= deleted
        return deleted

    def count(self) -> int:
        """Records not yet delivered: flushed rows neither delivered nor kept, plus the unflushed buffer."""
        return self._stored - self._kept + len(self._buffer)

    @property
    def kept(self) -> int:
        """Delivered rows kept until the archive has them."""
        return self._kept

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
