"""The durable ledger: accounts, ledger events, the outbox and billing problems, in SQL.

The billing database (``[billing] db_url``; default sqlite ``DATA_DIR/billing.sqlite``,
the rate store's database) is the *source of truth* for money: the embedded
Kafka broker is memory only, so the billing service rebuilds its whole state
by folding ``ledger_event`` at start.  Amounts are decimal *text* (exact).

* ``ledger_event``: append-only.  ``id`` is unique (the event's cause, see
  billing/ledger/events.py): appending an event whose id is there already is a no-op
  that reports "not new".  ``seq`` orders the ledger.
* the ledger is its own outbox: ``ledger_publish`` keeps, per topic, the
  last ``seq`` the broker acknowledged; the service publishes the events after
  it to ``ledger.events`` (one writer, so ``seq`` order is commit order).
* ``ledger_outbox``: other rows to publish (``billing.notifications``),
  written in the same transaction as the events that caused them; deleted
  once the broker acknowledged them.
* ``billing_problem``: CDRs that could not be debited, calls released without
  a CDR (``ledger check`` lists them).
* ``rerate_run``: one row per rerate run (billing/rerate.py): who, when, the
  period and filters, calls seen / changed, totals and per-account deltas
  (JSON); written in the transaction that appends its corrections.
* ``billing_account``: prepaid / postpaid accounts; changes bump
  ``billing_change_log`` so a running service notices edits made elsewhere.

Only one process appends to the ledger at a time: the billing service, or a
CLI command while no service runs.  ``ServiceLock`` (an flock on
``DATA_DIR/run/billing.lock``) enforces that.  SQLite runs with
``synchronous = FULL`` here: a committed money event survives a power cut.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from billing.errors import LedgerError
from billing.money import money_text
from proxy.contract.credit import OWNERS_COLUMNS, OWNERS_TABLE
from proxy.contract.ledger import LedgerEvent
from proxy.infra.config import BILLING_LOCK_FILE, RUN_DIR
from proxy.infra.pidlock import LockHeld, PidLock
from proxy.infra.sqldb import SqlStore, change_log_table

from .accounts import AccountInfo
from .events import Problem

if TYPE_CHECKING:
    from billing.rerate import RerateRun

__all__ = ["LedgerStore", "ServiceLock", "ServiceRunning", "metadata"]

metadata = MetaData()

account_table = Table(
    "billing_account", metadata,
    Column("id", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("credit_limit", String(48), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

event_table = Table(
    "ledger_event", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("account", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", String(48), nullable=False),          # decimal text: exact
    Column("currency", String(3), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("v", Integer, nullable=False),
    Column("call_id", String(255), nullable=False),
    Column("cdr_id", String(36), nullable=False),
    Column("leg", Integer, nullable=False),
    Column("key", String(255), nullable=False),
    Column("step", Integer, nullable=False),
    Column("final", Boolean, nullable=False),
    Column("paid_ms", BigInteger, nullable=False),
    Column("answer_ms", BigInteger, nullable=False),
    Column("number", String(64), nullable=False),
    Column("plan", String(64), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("rate_name", String(64), nullable=False),
    Column("gateway", String(255), nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
    Column("billed_s", BigInteger, nullable=False),
    Column("note", String(500), nullable=False),
    Index("ix_ledger_event_account_seq", "account", "seq"),
    Index("ix_ledger_event_kind_answer", "kind", "answer_ms"),
    Index("ix_ledger_event_call", "call_id"),
    sqlite_autoincrement=True,                              # a seq is never reused
)

outbox_table = Table(
    "ledger_outbox", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("value", LargeBinary, nullable=False),
    sqlite_autoincrement=True,
)

problem_table = Table(
    "billing_problem", metadata,
    Column("id", String(36), primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("account", String(255), nullable=False),
    Column("call_id", String(255), nullable=False),
    Column("cdr_id", String(36), nullable=False),
    Column("leg", Integer, nullable=False),
    Column("reason", String(500), nullable=False),
)

publish_table = Table(
    "ledger_publish", metadata,
    Column("topic", String(255), primary_key=True),
    Column("seq", BigInteger, nullable=False),            # the last event the broker has
)

rerate_run_table = Table(
    "rerate_run", metadata,
    Column("id", String(36), primary_key=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("who", String(255), nullable=False),
    Column("from_ms", BigInteger, nullable=False),
    Column("to_ms", BigInteger, nullable=False),
    Column("account", String(255), nullable=False),
    Column("plan", String(64), nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("changed", BigInteger, nullable=False),
    Column("unrated", BigInteger, nullable=False),
    Column("total_before", String(48), nullable=False),     # decimal text: exact
    Column("total_after", String(48), nullable=False),
    Column("accounts", Text, nullable=False),               # per-account deltas, JSON
    Index("ix_rerate_run_created", "created_ms"),
)

owner_table = Table(
    OWNERS_TABLE, metadata,                               # several billing instances (billing/ledger/owners.py)
    Column("part", Integer, primary_key=True, autoincrement=False),   # a billing.calls partition
    Column("epoch", BigInteger, nullable=False),          # the fencing token: +1 at each take-over
    Column("owner", String(255), nullable=False),         # the instance holding it ("" = none)
    Column("host", String(255), nullable=False),          # its authorization UDP address
    Column("port", Integer, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
assert tuple(c.name for c in owner_table.columns) == OWNERS_COLUMNS

command_table = Table(
    "billing_command", metadata,                          # admin RPC for an account another instance owns
    Column("id", String(36), primary_key=True),
    Column("part", Integer, nullable=False),
    Column("request", LargeBinary, nullable=False),       # one rpc.RpcRequest line
    Column("response", LargeBinary, nullable=True),       # one rpc.RpcResponse line, once answered
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_billing_command_part", "part", "created_ms"),
)

billing_change_log = change_log_table(metadata, "billing_change_log")

_EVENT_FIELDS = LedgerEvent.__struct_fields__
assert {c.name for c in event_table.columns} == set(_EVENT_FIELDS), "ledger_event columns = LedgerEvent fields"


def _event_row(ev: LedgerEvent) -> dict:
    row = {name: getattr(ev, name) for name in _EVENT_FIELDS if name != "seq"}
    row["amount"] = money_text(ev.amount)
    return row


def _event(row) -> LedgerEvent:
    values = row._asdict()                 # the table's columns are the event's fields (one dict, no getattr each)
    values["amount"] = Decimal(values["amount"])
    values["final"] = bool(values["final"])
    return LedgerEvent(**values)


def _account(row) -> AccountInfo:
    return AccountInfo(id=row.id, kind=row.kind, currency=row.currency, status=row.status,
                       credit_limit=Decimal(row.credit_limit), name=row.name,
                       created_ms=row.created_ms, updated_ms=row.updated_ms)


def _account_row(info: AccountInfo) -> dict:
    return {"id": info.id, "kind": info.kind, "currency": info.currency, "status": info.status,
            "credit_limit": money_text(info.credit_limit), "name": info.name,
            "created_ms": info.created_ms, "updated_ms": info.updated_ms}


class LedgerStore(SqlStore):
    error = LedgerError
    what = "billing"
    change_log = billing_change_log
    metadata = metadata

    def __init__(self, url: str):
        super().__init__(url)
        # several billing instances: checks, in each appending transaction, that
        # this instance still owns the events' accounts (billing/ledger/owners.py)
        self.fence: Callable[[Connection, set[str]], None] | None = None
        if self._sqlite:
            @event.listens_for(self._engine, "connect")
            def _durable(dbapi_conn, _record):
                # after tune_sqlite's NORMAL: a committed money event is on disk
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA synchronous = FULL")
                cur.close()


    # -- accounts -------------------------------------------------------------------------
    def list_accounts(self) -> list[AccountInfo]:
        with self._read() as conn:
            return [_account(r) for r in conn.execute(select(account_table).order_by(account_table.c.id))]

    def get_account(self, account: str) -> AccountInfo | None:
        with self._read() as conn:
            row = conn.execute(select(account_table).where(account_table.c.id == account)).first()
        return None if row is None else _account(row)

    def put_account(self, info: AccountInfo, *, create: bool) -> AccountInfo:
        """Create (refused if it exists) or replace (refused if it does not) an account."""
        with self._write() as conn:
            exists = conn.execute(select(account_table.c.id).where(account_table.c.id == info.id)).first()
            if create and exists is not None:
                raise LedgerError(f"account {info.id} already exists", status=409)
            if not create and exists is None:
                raise LedgerError(f"account {info.id} does not exist", status=404)
            if exists is None:
                conn.execute(insert(account_table).values(**_account_row(info)))
            else:
                currency = conn.execute(select(account_table.c.currency)
                                        .where(account_table.c.id == info.id)).scalar()
                if currency != info.currency and _has_events(conn, info.id):
                    raise LedgerError(f"account {info.id} has ledger events in {currency}: "
                                      "its currency cannot change", status=409)
                conn.execute(update(account_table).where(account_table.c.id == info.id)
                             .values(**_account_row(info)))
        return info

    def delete_account(self, account: str) -> None:
        with self._write() as conn:
            if _has_events(conn, account):
                raise LedgerError(f"account {account} has ledger events: block it instead", status=409)
            if not conn.execute(delete(account_table).where(account_table.c.id == account)).rowcount:
                raise LedgerError(f"account {account} does not exist", status=404)

    # -- appending (the ledger's one writer) ----------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction that does not bump the account change log."""
        with self._guard(), self._engine.connect() as conn:
            conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                yield conn

    def append(self, events: Iterable[LedgerEvent], *, problems: Iterable[Problem] = (),
               outbox: Iterable[tuple[str, str, bytes]] = ()) -> list[LedgerEvent]:
        with self.transaction() as conn:
            return self.append_in(conn, events, problems=problems, outbox=outbox)

    def append_in(self, conn: Connection, events: Iterable[LedgerEvent], *,
                  problems: Iterable[Problem] = (), outbox: Iterable[tuple[str, str, bytes]] = ()
                  ) -> list[LedgerEvent]:
        """Append the events whose id is new; returns them with their ``seq``.
        (One lookup and one multi-row INSERT ... RETURNING per call: the writer
        thread spends little time holding the GIL.)"""
        t = event_table
        unique: dict[str, LedgerEvent] = {}
        for ev in events:
            unique.setdefault(ev.id, ev)
        if self.fence is not None and unique:
            self.fence(conn, {ev.account for ev in unique.values()})
        ids = list(unique)
        for start in range(0, len(ids), 500):
            for found in conn.execute(select(t.c.id).where(t.c.id.in_(ids[start:start + 500]))).scalars():
                del unique[found]
        new: list[LedgerEvent] = []
        if unique:
            fresh = list(unique.values())
            rows = conn.execute(insert(t).returning(t.c.seq, t.c.id, sort_by_parameter_order=True),
                                [_event_row(ev) for ev in fresh]).all()
            for ev, row in zip(fresh, rows):
                assert row.id == ev.id
                new.append(msgspec.structs.replace(ev, seq=int(row.seq)))
        queued = [{"topic": topic, "key": key, "value": value} for topic, key, value in outbox]
        if queued:
            conn.execute(insert(outbox_table), queued)           # one executemany, in order
        fresh_problems: dict[str, Problem] = {}
        for p in problems:
            fresh_problems.setdefault(p.id, p)                   # the first of an id counts
        ids = list(fresh_problems)
        for start in range(0, len(ids), 500):
            for found in conn.execute(select(problem_table.c.id)
                                      .where(problem_table.c.id.in_(ids[start:start + 500]))).scalars():
                del fresh_problems[found]
        if fresh_problems:
            conn.execute(insert(problem_table), [
                {"id": p.id, "ts_ms": p.ts_ms, "account": p.account, "call_id": p.call_id, "cdr_id": p.cdr_id,
                 "leg": p.leg, "reason": p.reason[:500]} for p in fresh_problems.values()])
        return new

    # -- reading ----------------------------------------------------------------------------
    def get_event(self, event_id: str) -> LedgerEvent | None:
        with self._read() as conn:
            row = conn.execute(select(event_table).where(event_table.c.id == event_id)).first()
        return None if row is None else _event(row)

    def events(self, *, account: str | None = None, after_seq: int = 0, before_seq: int | None = None,
               kinds: Iterable[str] | None = None, from_ms: int | None = None, to_ms: int | None = None,
               time_field: str = "ts_ms", limit: int | None = None, descending: bool = False
               ) -> list[LedgerEvent]:
        t = event_table
        query = select(t).where(t.c.seq > after_seq)
        if before_seq is not None:
            query = query.where(t.c.seq < before_seq)
        if account is not None:
            query = query.where(t.c.account == account)
        if kinds is not None:
            query = query.where(t.c.kind.in_(list(kinds)))
        column = t.c[time_field]
        if from_ms is not None:
            query = query.where(column >= from_ms)
        if to_ms is not None:
            query = query.where(column < to_ms)
        query = query.order_by(t.c.seq.desc() if descending else t.c.seq)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [_event(row) for row in conn.execute(query)]

    def iter_events(self, *, account: str | None = None, chunk: int = 20000,
                    kinds: Iterable[str] | None = None) -> Iterator[LedgerEvent]:
        """Every event in ledger order, read in chunks (the fold at start)."""
        after = 0
        while True:
            page = self.events(account=account, after_seq=after, limit=chunk, kinds=kinds)
            yield from page
            if len(page) < chunk:
                return
            after = page[-1].seq

    def events_of(self, accounts: Iterable[str]) -> list[LedgerEvent]:
        """Every event of these accounts, in ledger order (a partition taken over)."""
        t, ids = event_table, sorted(set(accounts))
        out: list[LedgerEvent] = []
        with self._read() as conn:
            for start in range(0, len(ids), 500):
                out += [_event(r) for r in conn.execute(select(t).where(t.c.account.in_(ids[start:start + 500])))]
        return sorted(out, key=lambda e: e.seq)

    def count_events(self, *, account: str | None = None, upto_seq: int | None = None,
                     from_seq: int = 0) -> int:
        t = event_table
        query = select(func.count()).select_from(t).where(t.c.seq > from_seq)
        if account is not None:
            query = query.where(t.c.account == account)
        if upto_seq is not None:
            query = query.where(t.c.seq <= upto_seq)
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def max_seq(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.max(event_table.c.seq))).scalar() or 0)

    def problems(self, *, account: str | None = None, from_ms: int | None = None,
                 to_ms: int | None = None) -> list[Problem]:
        t = problem_table
        query = select(t).order_by(t.c.ts_ms, t.c.id)
        if account is not None:
            query = query.where(t.c.account == account)
        if from_ms is not None:
            query = query.where(t.c.ts_ms >= from_ms)
        if to_ms is not None:
            query = query.where(t.c.ts_ms < to_ms)
        with self._read() as conn:
            return [Problem(id=r.id, ts_ms=r.ts_ms, account=r.account, reason=r.reason,
                            call_id=r.call_id, cdr_id=r.cdr_id, leg=r.leg) for r in conn.execute(query)]

    def leg_events(self, cdr_ids: Iterable[str], kinds: Iterable[str]) -> list[LedgerEvent]:
        """The events of those kinds naming those CDRs, in ledger order."""
        t = event_table
        ids, kinds = sorted(set(cdr_ids)), list(kinds)
        out: list[LedgerEvent] = []
        with self._read() as conn:
            for start in range(0, len(ids), 500):
                out += [_event(r) for r in conn.execute(
                    select(t).where(t.c.cdr_id.in_(ids[start:start + 500])).where(t.c.kind.in_(kinds)))]
        return sorted(out, key=lambda e: e.seq)

    # -- rerate runs ------------------------------------------------------------------------
    def put_run_in(self, conn: Connection, run: "RerateRun") -> None:
        conn.execute(insert(rerate_run_table).values(
            id=run.id, created_ms=run.created_ms, who=run.who[:255], from_ms=run.from_ms, to_ms=run.to_ms,
            account=run.account, plan=run.plan, calls=run.calls, changed=run.changed, unrated=run.unrated,
            total_before=money_text(run.total_before), total_after=money_text(run.total_after),
            accounts=run.accounts_json()))

    def runs(self, *, limit: int = 100, before_ms: int | None = None) -> list["RerateRun"]:
        """Rerate runs, newest first."""
        t = rerate_run_table
        query = select(t).order_by(t.c.created_ms.desc(), t.c.id).limit(limit)
        if before_ms is not None:
            query = query.where(t.c.created_ms < before_ms)
        with self._read() as conn:
            return [_run(r) for r in conn.execute(query)]

    def run_events(self, run_id: str, *, limit: int = 1000) -> list[LedgerEvent]:
        """The corrections a rerate run booked (``key`` = its id), in ledger order."""
        t = event_table
        with self._read() as conn:
            return [_event(r) for r in conn.execute(select(t).where(t.c.kind == "rerate").where(t.c.key == run_id)
                                                    .order_by(t.c.seq).limit(limit))]

    def get_run(self, run_id: str) -> "RerateRun | None":
        with self._read() as conn:
            row = conn.execute(select(rerate_run_table).where(rerate_run_table.c.id == run_id)).first()
        return None if row is None else _run(row)

    # -- commands for another instance's accounts (billing/credit/service.py) ----------------
    def owned_partitions(self) -> int:
        """How many partitions some billing instance owns now (several instances)."""
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(owner_table)
                                    .where(owner_table.c.port > 0)).scalar() or 0)

    def command_put(self, command_id: str, part: int, request: bytes, now_ms: int) -> None:
        with self.transaction() as conn:
            conn.execute(insert(command_table).values(id=command_id, part=part, request=request,
                                                      response=None, created_ms=now_ms))

    def command_response(self, command_id: str) -> bytes | None:
        with self._read() as conn:
            value = conn.execute(select(command_table.c.response).where(command_table.c.id == command_id)).scalar()
        return None if value is None else bytes(value)

    def command_delete(self, command_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(delete(command_table).where(command_table.c.id == command_id))

    def commands_for(self, parts: Iterable[int], limit: int = 50) -> list[tuple[str, bytes]]:
        """Unanswered commands for these partitions, oldest first."""
        t = command_table
        with self._read() as conn:
            return [(r.id, bytes(r.request)) for r in conn.execute(
                select(t.c.id, t.c.request).where(t.c.part.in_(sorted(parts))).where(t.c.response.is_(None))
                .order_by(t.c.created_ms).limit(limit))]

    def command_answer(self, command_id: str, response: bytes) -> None:
        with self.transaction() as conn:
            conn.execute(update(command_table).where(command_table.c.id == command_id).values(response=response))

    def commands_expire(self, before_ms: int) -> None:
        """Commands nobody waits for any more (their requester gave up or died)."""
        with self.transaction() as conn:
            conn.execute(delete(command_table).where(command_table.c.created_ms < before_ms))

    # -- publishing -------------------------------------------------------------------------
    def published_seq(self, topic: str) -> int:
        with self._read() as conn:
            return int(conn.execute(select(publish_table.c.seq).where(publish_table.c.topic == topic)
                                    ).scalar() or 0)

    def unpublished(self, topic: str, limit: int = 500) -> list[LedgerEvent]:
        """The next events ``topic`` has not had yet, in ledger order."""
        return self.events(after_seq=self.published_seq(topic), limit=limit)

    def mark_published(self, topic: str, seq: int) -> None:
        with self.transaction() as conn:
            done = conn.execute(update(publish_table).where(publish_table.c.topic == topic)
                                .where(publish_table.c.seq < seq).values(seq=seq)).rowcount
            if not done and conn.execute(select(publish_table.c.seq)
                                         .where(publish_table.c.topic == topic)).first() is None:
                conn.execute(insert(publish_table).values(topic=topic, seq=seq))

    def outbox_batch(self, limit: int = 500) -> list[tuple[int, str, str, bytes]]:
        t = outbox_table
        with self._read() as conn:
            return [(r.seq, r.topic, r.key, bytes(r.value)) for r in
                    conn.execute(select(t).order_by(t.c.seq).limit(limit))]

    def outbox_delete(self, upto_seq: int) -> None:
        with self.transaction() as conn:
            conn.execute(delete(outbox_table).where(outbox_table.c.seq <= upto_seq))

    def outbox_delete_rows(self, seqs: Iterable[int]) -> None:
        """Delete exactly these rows (several publishers: rows are not committed in ``seq`` order)."""
        seqs = list(seqs)
        with self.transaction() as conn:
            for start in range(0, len(seqs), 500):
                conn.execute(delete(outbox_table).where(outbox_table.c.seq.in_(seqs[start:start + 500])))

    def outbox_size(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(outbox_table)).scalar() or 0)


def _run(row) -> "RerateRun":
    from billing.rerate import RerateRun  # billing/rerate.py imports this package
    return RerateRun(id=row.id, who=row.who, created_ms=row.created_ms, from_ms=row.from_ms, to_ms=row.to_ms,
                     account=row.account, plan=row.plan, calls=row.calls, changed=row.changed,
                     unrated=row.unrated, total_before=Decimal(row.total_before),
                     total_after=Decimal(row.total_after), accounts=RerateRun.accounts_from_json(row.accounts))


def _has_events(conn: Connection, account: str) -> bool:
    return conn.execute(select(event_table.c.seq).where(event_table.c.account == account).limit(1)
                        ).first() is not None


# -- the one-writer lock ------------------------------------------------------------------------

class ServiceRunning(LockHeld):
    """The ledger's lock is held: the billing service (or another command) writes it."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(path, pid)
        self.args = (f"{path} is locked by pid {pid}: the billing service is running",)


class ServiceLock(PidLock):
    """The exclusive lock on DATA_DIR/run/billing.lock, held while writing the ledger."""

    def __init__(self, data_dir: str | os.PathLike):
        super().__init__(Path(data_dir) / RUN_DIR / BILLING_LOCK_FILE)

    def acquire(self) -> "ServiceLock":
        try:
            return super().acquire()
        except LockHeld as held:
            raise ServiceRunning(held.path, held.pid) from None
        return False

    def __enter__(self) -> "ServiceLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
