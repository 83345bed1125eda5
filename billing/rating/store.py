"""The rate store: rate plans, their rates and which plan each account uses, in SQL.

The billing database (``[billing] db_url``; default sqlite ``DATA_DIR/billing.sqlite``)
is opened and guarded like the provisioning store (``proxy.contract.sqldb``).
Money is stored as decimal *text*, never as a float column, and every rate read
back goes through ``Rate``'s validation.  Every write checks the plan rules
(one currency, no two same-prefix rates applicable at once) inside the write
transaction and bumps ``rates_change_log``, so credit control can keep a
``RatesSnapshot`` in memory and reload it when ``version()`` moves.

Every method raises only RatingError (NoRateError never: that is rating's).
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, CursorResult

from proxy.infra.sqldb import SqlStore, change_log_table, utcnow
from proxy.infra.sqldb import count_rows as _count

from .model import Rate, RatePlan, RatesSnapshot, RatingError, check_plan_name, check_timezone

__all__ = ["RatesStore", "StoredRate", "PlanInfo", "metadata"]

metadata = MetaData()

rate_plan_table = Table(
    "rate_plan", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("timezone", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

rate_table = Table(
    "rate", metadata,
    Column("id", Integer, primary_key=True),
    Column("plan_id", Integer, ForeignKey("rate_plan.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("prefix", String(32), nullable=False),
    Column("name", String(64), nullable=False),
    Column("price_per_min", String(40), nullable=False),     # decimal text: exact
    Column("connect_fee", String(40), nullable=False),
    Column("first_increment", Integer, nullable=False),
    Column("next_increment", Integer, nullable=False),
    Column("min_seconds", Integer, nullable=False),
    Column("rounding", String(16), nullable=False),
    Column("decimals", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("valid_from", DateTime(timezone=True), nullable=True),
    Column("valid_to", DateTime(timezone=True), nullable=True),
    Column("weekdays", String(16), nullable=False),            # "0,1,2,3,4"; "" = every day
    Column("time_from", Integer, nullable=False),              # seconds after local midnight
    Column("time_to", Integer, nullable=False),
)

account_plan_table = Table(
    "account_plan", metadata,
    Column("account", String(255), primary_key=True),          # user@domain, as in CdrLeg.account
    Column("plan_id", Integer, ForeignKey("rate_plan.id"), nullable=False, index=True),
    Column("assigned_at", DateTime(timezone=True), nullable=False),
)

rates_change_log_table = change_log_table(metadata, "rates_change_log")


class StoredRate(msgspec.Struct, frozen=True, kw_only=True):
    """A rate as the REST API addresses it."""
    id: int
    plan: str
    rate: Rate


class PlanInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    timezone: str
    currency: str | None
    rates: int
    accounts: int


class RatesStore(SqlStore):
    """Rate plans, rates and account assignments."""

    error = RatingError
    what = "billing"
    change_log = rates_change_log_table
    metadata = metadata


    # -- plans --------------------------------------------------------------------------
    def create_plan(self, name: str, timezone: str = "UTC") -> None:
        check_plan_name(name)
        check_timezone(timezone)
        with self._write() as conn:
            if _plan_id(conn, name) is not None:
                raise RatingError(f"plan {name} already exists")
            conn.execute(insert(rate_plan_table).values(name=name, timezone=timezone, created_at=utcnow()))

    def set_timezone(self, name: str, timezone: str) -> None:
        check_timezone(timezone)
        with self._write() as conn:
            plan_id = _require_plan(conn, name)
            conn.execute(update(rate_plan_table).where(rate_plan_table.c.id == plan_id)
                         .values(timezone=timezone))

    def delete_plan(self, name: str) -> int:
        """Delete a plan and its rates (refused while accounts use it); returns the rates deleted."""
        with self._write() as conn:
            plan_id = _require_plan(conn, name)
            users = _count(conn, account_plan_table, account_plan_table.c.plan_id == plan_id)
            if users:
                raise RatingError(f"plan {name} is assigned to {users} account(s); reassign them first")
            gone = conn.execute(delete(rate_table).where(rate_table.c.plan_id == plan_id)).rowcount or 0
            conn.execute(delete(rate_plan_table).where(rate_plan_table.c.id == plan_id))
            return gone

    def list_plans(self) -> list[PlanInfo]:
        p, r, a = rate_plan_table, rate_table, account_plan_table
        with self._read() as conn:
            plans = conn.execute(select(p.c.id, p.c.name, p.c.timezone).order_by(p.c.name)).all()
            rates: dict[int, int] = dict(
                conn.execute(select(r.c.plan_id, func.count()).group_by(r.c.plan_id)).all())
            currency: dict[int, str] = dict(
                conn.execute(select(r.c.plan_id, func.min(r.c.currency)).group_by(r.c.plan_id)).all())
            users: dict[int, int] = dict(
                conn.execute(select(a.c.plan_id, func.count()).group_by(a.c.plan_id)).all())
        return [PlanInfo(name=row.name, timezone=row.timezone, currency=currency.get(row.id),
                         rates=int(rates.get(row.id, 0)), accounts=int(users.get(row.id, 0)))
                for row in plans]

    def get_plan(self, name: str) -> RatePlan:
        with self._read() as conn:
            return _load_plan(conn, name)

    def get_plans(self, names: list[str] | None = None) -> dict[str, RatePlan]:
        """The named plans (all when None) that exist, read in one transaction."""
        with self._read() as conn:
            if names is None:
                names = list(conn.execute(select(rate_plan_table.c.name)).scalars())
            return {n: _load_plan(conn, n) for n in names if _plan_id(conn, n) is not None}

    def put_plans(self, plans: dict[str, RatePlan], *, expect_version: int | None = None) -> None:
        """Store complete plans at once (CSV import): each plan is created or has
        its time zone and all its rates replaced.  With ``expect_version``,
        refused when anything changed since that version was read."""
        with self._write() as conn:
            if expect_version is not None and self._version_in(conn) != expect_version:
                raise RatingError("the rates changed while the file was being checked; run the import again")
            for plan in plans.values():
                plan_id = _plan_id(conn, plan.name)
                if plan_id is None:
                    plan_id = _inserted_id(conn.execute(insert(rate_plan_table).values(
                        name=plan.name, timezone=plan.timezone, created_at=utcnow())))
                else:
                    conn.execute(update(rate_plan_table).where(rate_plan_table.c.id == plan_id)
                                 .values(timezone=plan.timezone))
                    conn.execute(delete(rate_table).where(rate_table.c.plan_id == plan_id))
                if plan.rates:
                    conn.execute(insert(rate_table), [_row(plan_id, r) for r in plan.rates])

    # -- rates ----------------------------------------------------------------------------
    def list_rates(self, plan: str) -> list[StoredRate]:
        with self._read() as conn:
            plan_id = _require_plan(conn, plan)
            rows = conn.execute(select(rate_table).where(rate_table.c.plan_id == plan_id)
                                .order_by(rate_table.c.prefix, rate_table.c.id)).all()
        return [StoredRate(id=row.id, plan=plan, rate=_rate(row)) for row in rows]

    def get_rate(self, rate_id: int) -> StoredRate:
        with self._read() as conn:
            row = conn.execute(select(rate_table, rate_plan_table.c.name.label("plan_name"))
                               .join(rate_plan_table, rate_plan_table.c.id == rate_table.c.plan_id)
                               .where(rate_table.c.id == rate_id)).first()
        if row is None:
            raise RatingError(f"rate {rate_id} does not exist")
        return StoredRate(id=row.id, plan=row.plan_name, rate=_rate(row))

    def add_rate(self, plan: str, rate: Rate) -> int:
        """Add a rate to an existing plan; refused when it breaks the plan's rules."""
        with self._write() as conn:
            current = _load_plan(conn, plan)
            RatePlan(plan, current.rates + (rate,), current.timezone)
            plan_id = _require_plan(conn, plan)
            return _inserted_id(conn.execute(insert(rate_table).values(**_row(plan_id, rate))))

    def update_rate(self, rate_id: int, rate: Rate) -> None:
        with self._write() as conn:
            row = conn.execute(select(rate_table.c.plan_id).where(rate_table.c.id == rate_id)).first()
            if row is None:
                raise RatingError(f"rate {rate_id} does not exist")
            others = conn.execute(select(rate_table).where((rate_table.c.plan_id == row.plan_id)
                                                           & (rate_table.c.id != rate_id))).all()
            name, zone = conn.execute(select(rate_plan_table.c.name, rate_plan_table.c.timezone)
                                      .where(rate_plan_table.c.id == row.plan_id)).one()
            RatePlan(name, [_rate(o) for o in others] + [rate], zone)
            conn.execute(update(rate_table).where(rate_table.c.id == rate_id).values(**_row(row.plan_id, rate)))

    def delete_rate(self, rate_id: int) -> None:
        with self._write() as conn:
            if not conn.execute(delete(rate_table).where(rate_table.c.id == rate_id)).rowcount:
                raise RatingError(f"rate {rate_id} does not exist")

    # -- accounts -------------------------------------------------------------------------
    def assign(self, account: str, plan: str) -> None:
        """Rate ``account`` (user@domain) with ``plan`` from now on."""
        account = _check_account(account)
        a = account_plan_table
        with self._write() as conn:
            plan_id = _require_plan(conn, plan)
            if conn.execute(select(a.c.account).where(a.c.account == account)).first() is None:
                conn.execute(insert(a).values(account=account, plan_id=plan_id, assigned_at=utcnow()))
            else:
                conn.execute(update(a).where(a.c.account == account)
                             .values(plan_id=plan_id, assigned_at=utcnow()))

    def unassign(self, account: str) -> None:
        account = _check_account(account)
        with self._write() as conn:
            if not conn.execute(delete(account_plan_table)
                                .where(account_plan_table.c.account == account)).rowcount:
                raise RatingError(f"account {account} has no plan")

    def assignments(self, plan: str | None = None) -> dict[str, str]:
        """account -> plan name (only the accounts of ``plan`` when given)."""
        a, p = account_plan_table, rate_plan_table
        query = select(a.c.account, p.c.name).join(p, p.c.id == a.c.plan_id).order_by(a.c.account)
        if plan is not None:
            query = query.where(p.c.name == plan)
        with self._read() as conn:
            return {row.account: row.name for row in conn.execute(query)}

    def plan_of(self, account: str) -> str | None:
        a, p = account_plan_table, rate_plan_table
        with self._read() as conn:
            return conn.execute(select(p.c.name).join(a, p.c.id == a.c.plan_id)
                                .where(a.c.account == account)).scalar()

    def plan_for(self, account: str, default: str = "") -> RatePlan | None:
        """The plan that rates ``account``: its assignment, else ``default`` ("" = none)."""
        with self._read() as conn:
            a, p = account_plan_table, rate_plan_table
            name = conn.execute(select(p.c.name).join(a, p.c.id == a.c.plan_id)
                                .where(a.c.account == account)).scalar() or default
            return _load_plan(conn, name) if name else None

    # -- the hot path's view ----------------------------------------------------------------
    def snapshot(self) -> RatesSnapshot:
        """Every plan and assignment, read in one transaction."""
        with self._read() as conn:
            version = self._version_in(conn)
            names = list(conn.execute(select(rate_plan_table.c.name)).scalars())
            plans = {n: _load_plan(conn, n) for n in names}
            a, p = account_plan_table, rate_plan_table
            accounts = {row.account: row.name for row in
                        conn.execute(select(a.c.account, p.c.name).join(p, p.c.id == a.c.plan_id))}
        return RatesSnapshot(version=version, plans=plans, accounts=accounts)


# -- helpers -------------------------------------------------------------------------------

def _inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just added."""
    key = result.inserted_primary_key
    if key is None:                      # only for executemany, which these inserts never are
        raise RatingError("the database returned no id for the new row")
    return int(key[0])


def _row(plan_id: int, r: Rate) -> dict[str, Any]:
    return {
        "plan_id": plan_id, "prefix": r.prefix, "name": r.name,
        "price_per_min": format(r.price_per_min, "f"), "connect_fee": format(r.connect_fee, "f"),
        "first_increment": r.first_increment, "next_increment": r.next_increment,
        "min_seconds": r.min_seconds, "rounding": r.rounding, "decimals": r.decimals,
        "currency": r.currency,
        "valid_from": None if r.valid_from is None else r.valid_from.astimezone(timezone.utc),
        "valid_to": None if r.valid_to is None else r.valid_to.astimezone(timezone.utc),
        "weekdays": ",".join(str(d) for d in sorted(r.weekdays)),
        "time_from": r.time_from, "time_to": r.time_to,
    }


def _rate(row) -> Rate:
    try:
        return Rate(
            prefix=row.prefix, name=row.name, price_per_min=Decimal(row.price_per_min),
            connect_fee=Decimal(row.connect_fee), first_increment=row.first_increment,
            next_increment=row.next_increment, min_seconds=row.min_seconds, rounding=row.rounding,
            decimals=row.decimals, currency=row.currency, valid_from=_utc(row.valid_from),
            valid_to=_utc(row.valid_to),
            weekdays=frozenset(int(d) for d in row.weekdays.split(",") if d),
            time_from=row.time_from, time_to=row.time_to)
    except (RatingError, ArithmeticError, ValueError) as exc:
        raise RatingError(f"rate {row.id} in the billing database is invalid: {exc}") from None


def _utc(value: datetime | None) -> datetime | None:
    # SQLite gives naive date-times back; they were stored as UTC
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _load_plan(conn: Connection, name: str) -> RatePlan:
    row = conn.execute(select(rate_plan_table.c.id, rate_plan_table.c.timezone)
                       .where(rate_plan_table.c.name == name)).first()
    if row is None:
        raise RatingError(f"plan {name} does not exist")
    rates = conn.execute(select(rate_table).where(rate_table.c.plan_id == row.id)
                         .order_by(rate_table.c.id)).all()
    return RatePlan(name, [_rate(r) for r in rates], row.timezone)


def _plan_id(conn: Connection, name: str) -> int | None:
    return conn.execute(select(rate_plan_table.c.id).where(rate_plan_table.c.name == name)).scalar()


def _require_plan(conn: Connection, name: str) -> int:
    plan_id = _plan_id(conn, name)
    if plan_id is None:
        raise RatingError(f"plan {name} does not exist")
    return plan_id


def _check_account(account: str) -> str:
    text = account.strip() if isinstance(account, str) else ""
    if not text or len(text) > 255 or any(c.isspace() for c in text):
        raise RatingError(f"account {account!r} must be a non-empty user@domain without spaces")
    return text
