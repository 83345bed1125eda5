"""Several billing instances on one ledger: who owns which accounts, and the fence that proves it.

With ``[billing] partitioned = true`` every billing instance joins one Kafka
consumer group; the group hands out the partitions of ``billing.calls``
(keyed by account, Kafka's default partitioner, proxy/contract/credit.py
``account_partition``), and an instance owns exactly the accounts of its
partitions: it alone keeps their live state, answers their authorizations and
appends their ledger events.

Kafka's assignment alone is not a safe single-writer rule: an instance that
stalled past its session (GC, a frozen VM, a cut network) still believes it
owns its partitions while another has them.  So each partition has a row in
``billing_owner`` with an ``epoch``, a fencing token:

* **claim** (on assignment, before the accounts are loaded): ``epoch + 1``,
  remembered by the instance.  The UPDATE waits for every transaction that
  holds the row (below), so once it commits no earlier owner's append is in
  flight, and the fold that follows sees all of them.
* **check** (inside every appending transaction, ``LedgerStore.fence``): the
  rows of the events' partitions are read ``FOR SHARE`` and must carry the
  epochs this instance claimed; otherwise ``Fenced`` aborts the transaction.
  A stale owner can therefore never append after a new owner claimed.
* **announce** (once the accounts are loaded): our UDP address in the row.
* **release** (on revocation): owner/host/port cleared where the epoch is
  still ours, so the proxy stops routing there at once.

The same row carries the owner's authorization UDP address: the routing
table the proxy reads (proxy/runtime/authorization.py).  On SQLite (one
host) the checks are the same; its write lock serializes the transactions.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from billing.errors import LedgerError
from proxy.contract.credit import account_partition

from .store import owner_table, publish_table

__all__ = ["Fenced", "Ownership", "cursor_key"]


class Fenced(LedgerError):
    """This instance no longer owns a partition it tried to write for."""

    def __init__(self, message: str, parts: Iterable[int]):
        super().__init__(message, status=409)
        self.parts = set(parts)


def cursor_key(topic: str, part: int) -> str:
    """The ``ledger_publish`` row of one partition's publish cursor."""
    return f"{topic}#{part}"


class Ownership:
    """This instance's partitions: their epochs (what the fence checks) and
    which of them are loaded (what it answers for)."""

    def __init__(self, partitions: int, owner: str, host: str = "", port: int = 0):
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.partitions = partitions
        self.owner, self.host, self.port = owner, host, port
        self.epochs: dict[int, int] = {}      # claimed (written by the writer thread)
        self.ready: set[int] = set()          # claimed and loaded: answered for

    def part(self, account: str) -> int:
        return account_partition(account, self.partitions)

    def owns(self, account: str) -> bool:
        return self.part(account) in self.ready

    # -- in the ledger's transactions (the writer thread) -------------------------------------
    def ensure_rows(self, conn: Connection, now_ms: int) -> None:
        """One row per partition (several instances may race: a duplicate is fine)."""
        have = set(conn.execute(select(owner_table.c.part)).scalars())
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        for part in range(self.partitions):
            if part not in have:
                conn.execute(dialect_insert(owner_table).values(
                    part=part, epoch=0, owner="", host="", port=0, updated_ms=now_ms).on_conflict_do_nothing())

    def claim_in(self, conn: Connection, parts: Iterable[int], now_ms: int) -> dict[int, int]:
        """Take these partitions over: bump their epochs (waits for appends of
        a previous owner in flight).  No address yet: ``announce_in`` once
        loaded.  Returns the epochs."""
        t = owner_table
        claimed: dict[int, int] = {}
        for part in sorted(set(parts)):
            epoch = conn.execute(update(t).where(t.c.part == part)
                                 .values(epoch=t.c.epoch + 1, owner=self.owner, host="", port=0,
                                         updated_ms=now_ms).returning(t.c.epoch)).scalar()
            if epoch is None:
                raise LedgerError(f"billing_owner has no row for partition {part}")
            claimed[part] = int(epoch)
        self.epochs.update(claimed)
        return claimed

    def announce_in(self, conn: Connection, parts: Iterable[int], now_ms: int) -> None:
        """Our authorization address on these (claimed, loaded) partitions: the proxy routes here now."""
        t = owner_table
        for part in sorted(set(parts)):
            conn.execute(update(t).where(t.c.part == part).where(t.c.epoch == self.epochs[part])
                         .values(host=self.host, port=self.port, updated_ms=now_ms))

    def check_in(self, conn: Connection, accounts: set[str]) -> None:
        """``LedgerStore.fence``: raise ``Fenced`` unless we still own the accounts' partitions."""
        parts = {self.part(a) for a in accounts}
        self.check_parts_in(conn, parts)

    def check_parts_in(self, conn: Connection, parts: set[int]) -> None:
        mine = dict(self.epochs)
        missing = parts - set(mine)
        if missing:
            raise Fenced(f"partitions {sorted(missing)} are not this instance's", missing)
        t = owner_table
        rows = conn.execute(select(t.c.part, t.c.epoch).where(t.c.part.in_(sorted(parts)))
                            .with_for_update(read=True)).all()
        stale = {row.part for row in rows if int(row.epoch) != mine[row.part]} | (parts - {r.part for r in rows})
        if stale:
            raise Fenced(f"partitions {sorted(stale)} were taken over by another billing instance", stale)

    def release_in(self, conn: Connection, parts: Iterable[int], now_ms: int) -> None:
        """Give these partitions up: clear our address where the epoch is still ours."""
        t = owner_table
        for part in sorted(set(parts)):
            epoch = self.epochs.pop(part, None)
            self.ready.discard(part)
            if epoch is not None:
                conn.execute(update(t).where(t.c.part == part).where(t.c.epoch == epoch)
                             .values(owner="", host="", port=0, updated_ms=now_ms))

    def cursors_in(self, conn: Connection, topic: str, parts: Iterable[int]) -> dict[int, int]:
        """The publish cursors of these partitions (a partition never published
        by one starts at the single-instance cursor of the topic, if any)."""
        t = publish_table
        rows = dict(conn.execute(select(t.c.topic, t.c.seq)).all())
        start = int(rows.get(topic, 0))
        return {part: int(rows.get(cursor_key(topic, part), start)) for part in parts}

    def save_cursors_in(self, conn: Connection, topic: str, cursors: dict[int, int]) -> None:
        """Move the publish cursors forward (fenced: a stale owner cannot move them)."""
        if not cursors:
            return
        self.check_parts_in(conn, set(cursors))
        t = publish_table
        for part, seq in cursors.items():
            key = cursor_key(topic, part)
            done = conn.execute(update(t).where(t.c.topic == key).where(t.c.seq < seq).values(seq=seq)).rowcount
            if not done and conn.execute(select(t.c.seq).where(t.c.topic == key)).first() is None:
                conn.execute(insert(t).values(topic=key, seq=seq))
