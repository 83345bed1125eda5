"""Billing REST routes: accounts, balances, top-ups, ledger history, reports, rates.

Mounted on the API app (api/serve.py) with ``app.include_router(billing_router(...))``.
Same auth model as the CDR API (api/app.py): a bearer token; an ``admin``
token sees and changes everything, an ``account`` token only *reads* its own
account (balance, ledger, reports, its rates) -- another account is 404.

Writes of money go to the billing service (billing/client.py: the ledger's one
writer), which answers once the event is durable.  ``POST .../topups`` needs
an ``Idempotency-Key`` header: the same key again returns the same top-up
(200, ``replayed: true``) instead of a second one (201); the same key with
another amount is 409.  Amounts are JSON *strings* ("10.50"), never numbers.
Ledger history and reports read the ClickHouse copy (``ledger_events``).
"""

import re
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from proxy.infra.config import BillingSettings, LedgerSettings

from .client import BillingClient
from .errors import LedgerError
from .ledger.accounts import account_dict
from .ledger.clickhouse import LedgerQueries
from .ledger.store import LedgerStore
from .money import money_text
from .rating.csvfile import CsvImportError, plan_import, write_rates
from .rating.model import Rate, RatingError
from .rating.store import RatesStore
from .reports.build import REPORTS, build_report
from .reports.export import CONTENT_TYPES, FORMATS, report_bytes
from .reports.sources import ClickHouseSource

__all__ = ["billing_router", "BillingApi"]

MAX_MS = (2**32 - 1) * 1000
Account = Annotated[str, Path(max_length=255, pattern=r"^\S+$", description="user@domain")]


def _invalid(field: str, message: str, location: str = "query") -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": (location, field), "msg": message,
                                    "input": None}])


def _time(value: str | None, field: str, *, end: bool = False) -> int | None:
    """ISO 8601 (UTC when no offset; YYYY-MM and YYYY-MM-DD allowed) or epoch ms."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if re.fullmatch(r"\d{1,16}", text):
            ms = int(text)
        elif m := re.fullmatch(r"(\d{4})-(\d{2})", text):
            year, mon = int(m[1]), int(m[2])
            if end:
                year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
            ms = int(datetime(year, mon, 1, tzinfo=timezone.utc).timestamp() * 1000)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            ms = int(moment.timestamp() * 1000)
            if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                ms += 86_400_000
    except ValueError:
        raise _invalid(field, "expected ISO 8601 (2026-11-28T10:00:00Z, 2026-11) or epoch milliseconds") from None
    if not 0 <= ms <= MAX_MS:
        raise _invalid(field, "out of range")
    return ms


def _error(exc: Exception) -> HTTPException:
    if isinstance(exc, LedgerError):
        return HTTPException(exc.status, str(exc))
    message = str(exc)
    if "does not exist" in message or "has no plan" in message:
        return HTTPException(404, message)
    if "already exists" in message or "assigned to" in message or "changed while" in message:
        return HTTPException(409, message)
    return HTTPException(422, message)


# -- bodies ----------------------------------------------------------------------------------

class AccountIn(BaseModel):
    id: str = Field(max_length=255, description="user@domain, as the proxy authenticates it")
    kind: Literal["prepaid", "postpaid"] = "prepaid"
    currency: str | None = Field(None, description="ISO 4217; default the [billing] currency")
    credit_limit: str | None = Field(None, description="postpaid: decimal string, how far below 0")
    status: Literal["active", "blocked"] = "active"
    name: str = ""


class AccountPatch(BaseModel):
    kind: Literal["prepaid", "postpaid"] | None = None
    credit_limit: str | None = None
    status: Literal["active", "blocked"] | None = None
    name: str | None = None


class TopupIn(BaseModel):
    amount: str = Field(description="decimal string > 0, at most 6 decimals, e.g. \"10.50\"")
    note: str = Field("", max_length=500)


class AdjustmentIn(BaseModel):
    amount: str = Field(description="signed decimal string (adjustment) or > 0 (refund)")
    kind: Literal["adjustment", "refund"] = "adjustment"
    note: str = Field("", max_length=500)
    cdr_id: str = ""
    leg: int = -1


class PlanIn(BaseModel):
    name: str
    timezone: str = "UTC"


class PlanAssign(BaseModel):
    plan: str


class RateIn(BaseModel):
    prefix: str = ""
    price_per_min: str
    currency: str
    name: str = ""
    connect_fee: str = "0"
    first_increment: int = 60
    next_increment: int = 60
    min_seconds: int = 0
    rounding: Literal["up", "down", "half_up", "half_even"] = "half_up"
    decimals: int = 4
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    weekdays: list[int] = []
    time_from: int = 0
    time_to: int = 86400

    def to_rate(self) -> Rate:
        try:
            values = self.model_dump()
            for money in ("price_per_min", "connect_fee"):
                text = values[money].strip()
                if not re.fullmatch(r"\d+(\.\d+)?", text):
                    raise RatingError(f"{money} {text!r} must be a plain decimal string like 0.0125")
                values[money] = Decimal(text)
            values["weekdays"] = frozenset(values["weekdays"])
            return Rate(**values)
        except RatingError as exc:
            raise HTTPException(422, str(exc)) from None


def _rate_json(rate_id: int, plan: str, rate: Rate) -> dict:
    data = msgspec.to_builtins(rate, builtin_types=(Decimal, datetime))
    data["price_per_min"] = money_text(rate.price_per_min)
    data["connect_fee"] = money_text(rate.connect_fee)
    data["weekdays"] = sorted(rate.weekdays)
    return {"id": rate_id, "plan": plan, **data}


# -- the context -----------------------------------------------------------------------------

class BillingApi:
    """What the routes need: the billing database (accounts, ledger, rates: read),
    the billing service client (writes) and the ClickHouse ledger copy."""

    def __init__(self, data_dir: str | FsPath, billing: BillingSettings = BillingSettings(),
                 ledger: LedgerSettings = LedgerSettings(), backend=None):
        url = billing.database_url(data_dir)
        self.billing = billing
        self.store = LedgerStore(url)
        self.store.create_schema()
        self.rates = RatesStore(url)
        self.rates.create_schema()
        self.client = BillingClient(data_dir, billing)
        self.backend = backend
        self.queries = LedgerQueries(backend) if backend is not None else None

    def close(self) -> None:
        self.store.close()
        self.rates.close()


def billing_router(api: BillingApi, tokens) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["billing"])
    bearer = HTTPBearer(auto_error=False)

    def principal(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]):
        if credentials is None:
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        info = tokens.authenticate(credentials.credentials)
        if info is None:
            raise HTTPException(401, "invalid or revoked token",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return info

    Who = Annotated[Any, Depends(principal)]

    def admin(who) -> None:
        if not who.is_admin:
            raise HTTPException(403, "an admin token is required")

    def readable(who, account: str) -> None:
        # another account's data is "not found", not "forbidden": ids do not leak
        if not who.is_admin and who.account != account:
            raise HTTPException(404, f"account {account} does not exist")

    async def call(fn, *args, **kwargs):
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except (LedgerError, RatingError) as exc:
            raise _error(exc) from None

    def need_clickhouse() -> LedgerQueries:
        if api.queries is None:
            raise HTTPException(503, "the ledger store (ClickHouse) is not available in this process")
        return api.queries

    # -- accounts ---------------------------------------------------------------------------
    @router.get("/accounts", summary="Billing accounts (an account token: its own)")
    async def list_accounts(who: Who) -> dict:
        accounts = await call(api.store.list_accounts)
        plans = await call(api.rates.assignments)
        items = [dict(account_dict(a), plan=plans.get(a.id)) for a in accounts
                 if who.is_admin or a.id == who.account]
        return {"items": items}

    @router.post("/accounts", status_code=201, summary="Create a billing account (admin)")
    async def create_account(who: Who, body: AccountIn) -> dict:
        admin(who)
        fields = body.model_dump(exclude={"id"}, exclude_none=True)
        return await call(api.client.put_account, body.id, fields, create=True)

    @router.get("/accounts/{account}", summary="One billing account")
    async def get_account(who: Who, account: Account) -> dict:
        readable(who, account)
        info = await call(api.store.get_account, account)
        if info is None:
            raise HTTPException(404, f"account {account} does not exist")
        return dict(account_dict(info), plan=await call(api.rates.plan_of, account))

    @router.patch("/accounts/{account}", summary="Change status, credit limit, kind or name (admin)")
    async def patch_account(who: Who, account: Account, body: AccountPatch) -> dict:
        admin(who)
        fields = body.model_dump(exclude_none=True)
        if not fields:
            raise _invalid("body", "nothing to change", "body")
        return await call(api.client.put_account, account, fields, create=False)

    @router.delete("/accounts/{account}", status_code=204, summary="Delete an account without ledger events (admin)")
    async def delete_account(who: Who, account: Account) -> Response:
        admin(who)
        await call(api.client.delete_account, account)
        return Response(status_code=204)

    @router.get("/accounts/{account}/balance", summary="Balance, reservations, available credit, live calls")
    async def balance(who: Who, account: Account) -> dict:
        readable(who, account)
        return await call(api.client.balance, account)

    @router.post("/accounts/{account}/topups", summary="Top up, exactly once per Idempotency-Key (admin)",
                 responses={200: {"description": "the key was used before: the same top-up, not a new one"},
                            201: {"description": "applied"}, 409: {"description": "key reused for another amount"}})
    async def topup(who: Who, account: Account, body: TopupIn, response: Response,
                    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None
                    ) -> dict:
        admin(who)
        if not idempotency_key:
            raise _invalid("Idempotency-Key", "required: a unique key per top-up (a retry reuses it)", "header")
        result = await call(api.client.money, account, "topup", body.amount, idempotency_key, body.note)
        response.status_code = 200 if result.get("replayed") else 201
        return result

    @router.post("/accounts/{account}/adjustments", summary="Adjust or refund, once per Idempotency-Key (admin)")
    async def adjustment(who: Who, account: Account, body: AdjustmentIn, response: Response,
                         idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None
                         ) -> dict:
        admin(who)
        if not idempotency_key:
            raise _invalid("Idempotency-Key", "required", "header")
        result = await call(api.client.money, account, body.kind, body.amount, idempotency_key, body.note,
                            cdr_id=body.cdr_id, leg=body.leg)
        response.status_code = 200 if result.get("replayed") else 201
        return result

    @router.get("/accounts/{account}/ledger", summary="Ledger history, newest first (cursor pagination)")
    async def ledger(who: Who, account: Account,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     cursor: Annotated[str | None, Query(max_length=32, description="next_cursor of the previous page")] = None,
                     from_: Annotated[str | None, Query(alias="from")] = None,
                     to: str | None = None,
                     kind: Annotated[list[Literal["topup", "adjustment", "refund", "debit", "reservation", "release"]] | None,
                                     Query(description="repeatable")] = None) -> dict:
        readable(who, account)
        queries = need_clickhouse()
        before = None
        if cursor is not None:
            if not cursor.isdigit():
                raise _invalid("cursor", "not a cursor from this API")
            before = int(cursor)
        rows = await call(queries.history, account, limit=limit + 1, before_seq=before,
                          from_ms=_time(from_, "from"), to_ms=_time(to, "to"), kinds=kind)
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            for money in ("amount", "balance_delta", "reserved_delta"):
                row[money] = money_text(row[money])
        return {"items": rows, "limit": limit,
                "next_cursor": str(rows[-1]["seq"]) if more and rows else None}

    # -- reports (streamed downloads) ----------------------------------------------------------
    async def _download(name: str, account: str | None, from_: str | None, to: str | None,
                        month: str | None, fmt: str) -> StreamingResponse:
        if name not in REPORTS:
            raise HTTPException(404, f"no report {name!r}; one of {', '.join(REPORTS)}")
        if fmt not in FORMATS:
            raise _invalid("format", f"one of {', '.join(FORMATS)}")
        if month:
            from_ms, to_ms = _time(month, "month"), _time(month, "month", end=True)
        else:
            from_ms, to_ms = _time(from_, "from"), _time(to, "to", end=True)
        source = ClickHouseSource(need_clickhouse())
        info = await call(api.store.get_account, account) if account else None
        try:
            report = await call(build_report, name, source, account=account, from_ms=from_ms, to_ms=to_ms,
                                info=info)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        filename = f"{name}-{(account or 'all').replace('@', '_at_')}.{fmt}"
        return StreamingResponse(report_bytes(report, fmt), media_type=CONTENT_TYPES[fmt],
                                 headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @router.get("/accounts/{account}/reports/{report}",
                summary="statement | destinations | gateways | invoice of one account, as a file")
    async def account_report(who: Who, account: Account, report: str,
                             from_: Annotated[str | None, Query(alias="from")] = None, to: str | None = None,
                             month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
                             format: Literal["csv", "parquet", "xlsx"] = "csv") -> StreamingResponse:
        readable(who, account)
        return await _download(report, account, from_, to, month, format)

    @router.get("/reports/{report}", summary="destinations | gateways over all accounts (admin)")
    async def all_report(who: Who, report: Literal["destinations", "gateways"],
                         from_: Annotated[str | None, Query(alias="from")] = None, to: str | None = None,
                         month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
                         format: Literal["csv", "parquet", "xlsx"] = "csv") -> StreamingResponse:
        admin(who)
        return await _download(report, None, from_, to, month, format)

    @router.get("/ledger/check", summary="Σ debits vs Σ rated CDR costs per account and month (admin)")
    async def ledger_check(who: Who, from_: Annotated[str | None, Query(alias="from")] = None,
                           to: str | None = None, account: str | None = None) -> dict:
        admin(who)
        from .ledger.check import run_check
        if api.backend is None:
            raise HTTPException(503, "the CDR store is not available in this process")
        result = await call(run_check, api.backend, api.store, api.rates, from_ms=_time(from_, "from"),
                            to_ms=_time(to, "to", end=True), account=account,
                            default_plan=api.billing.default_plan)
        return result.to_dict()

    # -- rates ----------------------------------------------------------------------------------
    @router.get("/rate-plans", summary="Rate plans (admin)")
    async def list_plans(who: Who) -> dict:
        admin(who)
        plans = await call(api.rates.list_plans)
        return {"items": [msgspec.to_builtins(p) for p in plans]}

    @router.post("/rate-plans", status_code=201, summary="Create a rate plan (admin)")
    async def create_plan(who: Who, body: PlanIn) -> dict:
        admin(who)
        await call(api.rates.create_plan, body.name, body.timezone)
        return {"name": body.name, "timezone": body.timezone}

    @router.delete("/rate-plans/{plan}", status_code=204, summary="Delete a plan and its rates (admin)")
    async def delete_plan(who: Who, plan: str) -> Response:
        admin(who)
        await call(api.rates.delete_plan, plan)
        return Response(status_code=204)

    @router.get("/rate-plans/{plan}/rates", summary="A plan's rates (admin)")
    async def plan_rates(who: Who, plan: str) -> dict:
        admin(who)
        rates = await call(api.rates.list_rates, plan)
        return {"items": [_rate_json(r.id, r.plan, r.rate) for r in rates]}

    @router.post("/rate-plans/{plan}/rates", status_code=201, summary="Add a rate (admin)")
    async def add_rate(who: Who, plan: str, body: RateIn) -> dict:
        admin(who)
        rate = body.to_rate()
        rate_id = await call(api.rates.add_rate, plan, rate)
        return _rate_json(rate_id, plan, rate)

    @router.get("/rates/{rate_id}", summary="One rate (admin)")
    async def get_rate(who: Who, rate_id: int) -> dict:
        admin(who)
        stored = await call(api.rates.get_rate, rate_id)
        return _rate_json(stored.id, stored.plan, stored.rate)

    @router.put("/rates/{rate_id}", summary="Replace a rate (admin)")
    async def put_rate(who: Who, rate_id: int, body: RateIn) -> dict:
        admin(who)
        rate = body.to_rate()
        await call(api.rates.update_rate, rate_id, rate)
        stored = await call(api.rates.get_rate, rate_id)
        return _rate_json(stored.id, stored.plan, stored.rate)

    @router.delete("/rates/{rate_id}", status_code=204, summary="Delete a rate (admin)")
    async def delete_rate(who: Who, rate_id: int) -> Response:
        admin(who)
        await call(api.rates.delete_rate, rate_id)
        return Response(status_code=204)

    @router.get("/rate-plans/{plan}/export", summary="A plan as CSV (admin)", response_class=PlainTextResponse)
    async def export_plan(who: Who, plan: str) -> PlainTextResponse:
        admin(who)
        rate_plan = await call(api.rates.get_plan, plan)
        return PlainTextResponse(write_rates([rate_plan]), media_type="text/csv; charset=utf-8")

    @router.post("/rate-plans/import", summary="Import rates from CSV, all or nothing (admin)")
    async def import_rates(who: Who, request: Request, plan: str | None = None,
                           replace: bool = False, timezone: str | None = None) -> JSONResponse:
        admin(who)
        text = (await request.body()).decode("utf-8-sig", errors="replace")

        def run() -> dict:
            version = api.rates.version()
            result = plan_import(text, existing=api.rates.get_plans(), plan=plan, replace=replace,
                                 currency=api.billing.currency, timezone=api.billing.timezone,
                                 set_timezone=timezone)
            api.rates.put_plans(result.plans, expect_version=version)
            return {"added": result.added, "created": sorted(result.created)}
        try:
            return JSONResponse(await run_in_threadpool(run))
        except CsvImportError as exc:
            return JSONResponse({"detail": str(exc), "errors": list(exc.errors)}, status_code=422)
        except RatingError as exc:
            raise _error(exc) from None

    @router.put("/accounts/{account}/plan", summary="Rate an account with a plan (admin)")
    async def assign_plan(who: Who, account: Account, body: PlanAssign) -> dict:
        admin(who)
        await call(api.rates.assign, account, body.plan)
        return {"account": account, "plan": body.plan}

    @router.delete("/accounts/{account}/plan", status_code=204, summary="Remove an account's plan (admin)")
    async def unassign_plan(who: Who, account: Account) -> Response:
        admin(who)
        await call(api.rates.unassign, account)
        return Response(status_code=204)

    @router.get("/accounts/{account}/rates", summary="The rates of the account's plan")
    async def account_rates(who: Who, account: Account) -> dict:
        readable(who, account)
        plan = await call(api.rates.plan_of, account) or api.billing.default_plan
        if not plan:
            return {"plan": None, "items": []}
        rates = await call(api.rates.list_rates, plan)
        return {"plan": plan, "items": [_rate_json(r.id, r.plan, r.rate) for r in rates]}

    return router
