"""Which billing instance answers an account's authorization (several billing instances).

With ``[billing] partitioned`` each billing instance owns the accounts of the
``billing.calls`` partitions the Kafka group gave it, and writes itself into
the ``billing_owner`` table of the shared billing database (partition ->
instance, UDP address; proxy/contract/credit.py).  The proxy reads that table
(``[authorization] owners_url``) every ``owners_refresh_ms`` and after a
timeout, off its event loop, and sends each authorization to the owner of the
caller's account: the partition is Kafka's default partitioner on the account
(``account_partition``), as for the ``billing.calls`` keys.

``OwnerMap`` is the pure part (rows -> route); ``read_owners`` the I/O.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from ..contract.credit import OWNERS_TABLE, account_partition

__all__ = ["OwnerMap", "OwnerReader", "MAX_PARTITIONS"]

MAX_PARTITIONS = 4096          # rows read at most: a bounded table, whatever is in the database


class OwnerMap:
    """Partition -> (host, port) of its owner; None where no instance owns it now."""

    def __init__(self, rows: Iterable[tuple[int, str, int]] = ()):
        table = {int(part): (host, int(port)) for part, host, port in rows}
        # the partition count is the table's: rows 0..N-1 (a gap = not set up yet: route nothing)
        self.partitions = len(table) if set(table) == set(range(len(table))) else 0
        self.owners = {part: addr for part, addr in table.items() if addr[0] and 0 < addr[1] < 65536}

    def route(self, account: str) -> tuple[str, int] | None:
        if not self.partitions:
            return None
        return self.owners.get(account_partition(account, self.partitions))


class OwnerReader:
    """Reads ``billing_owner`` (blocking: call it from a thread)."""

    def __init__(self, url: str, *, timeout_s: float = 2.0):
        parsed = make_url(url)
        # bounded: a slow database delays the next table, never the proxy's loop (this runs in a thread)
        args = ({"connect_timeout": max(1, int(timeout_s)), "options": f"-c statement_timeout={int(timeout_s * 1000)}"}
                if parsed.get_backend_name() == "postgresql" else {})
        self._engine: Engine = create_engine(parsed, pool_size=1, max_overflow=0, pool_pre_ping=True,
                                             connect_args=args) \
            if parsed.get_backend_name() != "sqlite" else create_engine(parsed)

    def read(self) -> OwnerMap:
        with self._engine.connect() as conn:
            rows = conn.execute(text(f"SELECT part, host, port FROM {OWNERS_TABLE} ORDER BY part LIMIT :n"),
                                {"n": MAX_PARTITIONS}).all()
        return OwnerMap((r[0], r[1], r[2]) for r in rows)

    def close(self) -> None:
        self._engine.dispose()
