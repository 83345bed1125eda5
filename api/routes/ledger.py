"""The ledger: an account's history (``/v1/accounts/{account}/ledger``) and the
reconciliation of debits with rated CDRs (``/v1/ledger/check``, admin).

History is read from the ledger's ClickHouse copy (billing/ledger/clickhouse.py, fed by
this process' ledger sink), newest first, paged by ``seq``.  The check rates
every CDR leg in ClickHouse again and compares with the debits in the ledger.
"""
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from billing.ledger.check import run_check
from billing.money import money_text

from ..deps import (
    Admin,
    BillingSettingsDep,
    CdrStoreDep,
    LedgerQueriesDep,
    LedgerStoreDep,
    RatesStoreDep,
    ReadableAccount,
)
from ..params import Limit, Range, invalid
from ..schemas import CheckResult, EventKind, LedgerPage

router = APIRouter(tags=["ledger"])      # spans /accounts/{account}/ledger and /ledger/check


@router.get("/accounts/{account}/ledger", response_model=LedgerPage,
            summary="Ledger history, newest first (cursor pagination)")
async def history(
    info: ReadableAccount,
    queries: LedgerQueriesDep,
    range_: Range,
    kind: Annotated[list[EventKind] | None, Query(description="event kind (repeatable)")] = None,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(max_length=32, description="next_cursor of the previous page")] = None,
) -> dict:
    if cursor is not None and not cursor.isdigit():
        raise invalid("cursor", "not a cursor from this API")
    kinds: list[str] | None = list(kind) if kind else None
    rows = await run_in_threadpool(queries.history, info.id, limit=limit + 1,
                                   before_seq=int(cursor) if cursor is not None else None,
                                   from_ms=range_.from_ms, to_ms=range_.to_ms, kinds=kinds)
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        for money in ("amount", "balance_delta", "reserved_delta"):
            row[money] = money_text(row[money])
    return {"items": rows, "limit": limit, "next_cursor": str(rows[-1]["seq"]) if more and rows else None}


@router.get("/ledger/check", response_model=CheckResult,
            summary="Σ debits vs Σ rated CDR costs per account and month (admin)")
async def ledger_check(
    _: Admin,
    range_: Range,
    cdrs: CdrStoreDep,
    store: LedgerStoreDep,
    rates: RatesStoreDep,
    settings: BillingSettingsDep,
    account: Annotated[str | None, Query(max_length=255, description="one account only")] = None,
) -> dict:
    result = await run_in_threadpool(run_check, cdrs.backend, store, rates, from_ms=range_.from_ms,
                                     to_ms=range_.to_ms, account=account, default_plan=settings.default_plan)
    return result.to_dict()
