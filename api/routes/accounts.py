"""``/v1/accounts``: billing accounts, their balance, money (top-ups, adjustments,
refunds), their rate plan and rates.

Reads come from the billing database; every change goes to the billing
service (billing/client.py, the ledger's one writer), which answers once the
event is durable.  Money requests need an ``Idempotency-Key``: the same key
again returns the same event (200, ``replayed: true``) instead of a second
one (201); the same key with another amount is 409.  Changes are admin only;
an account token reads its own account (api/deps.py).
"""
import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from billing.application import BillingApplication, StoredLedger
from billing.ledger.accounts import account_dict

from ..deps import (
    AccountPath,
    Admin,
    BillingClientDep,
    BillingSettingsDep,
    LedgerStoreDep,
    Principal,
    RatesStoreDep,
    ReadableAccount,
    may_read,
)
from ..params import invalid, parse_instant
from ..schemas import (
    Account,
    AccountIn,
    AccountList,
    AccountPatch,
    AccountRates,
    AccountWithPlan,
    AdjustmentIn,
    Balance,
    MoneyResult,
    PlanAssign,
    PlanAssignment,
    Problem,
    RateOut,
    TopupIn,
)

router = APIRouter(prefix="/accounts", tags=["accounts"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such account (for an account token: 403, never 404)"}}


def idempotency_key(key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255,
                                                      description="unique per request; a retry reuses it")] = None
                    ) -> str:
    if not key:
        raise invalid("Idempotency-Key", "required: a unique key per request (a retry reuses it)", "header")
    return key


IdempotencyKey = Annotated[str, Depends(idempotency_key)]
MONEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    200: {"model": MoneyResult, "description": "the key was used before: the same event, not a new one"},
    201: {"model": MoneyResult, "description": "applied"},
    409: {"model": Problem, "description": "the key was used for another request, or the balance would "
                                          "go below its floor"}}


@router.get("", response_model=AccountList, summary="Billing accounts (an account token: its own)")
async def list_accounts(who: Principal, store: LedgerStoreDep, rates: RatesStoreDep) -> dict:
    accounts = await run_in_threadpool(store.list_accounts)
    plans = await run_in_threadpool(rates.assignments)
    return {"items": [dict(account_dict(a), plan=plans.get(a.id)) for a in accounts if may_read(who, a.id)]}


@router.post("", status_code=201, response_model=Account, summary="Create a billing account (admin)",
             responses={409: {"model": Problem, "description": "the account exists"}})
async def create_account(_: Admin, body: AccountIn, client: BillingClientDep) -> dict:
    fields = body.model_dump(exclude={"id"}, exclude_none=True)
    return await run_in_threadpool(client.put_account, body.id, fields, create=True)


@router.get("/{account}", responses=NOT_FOUND, response_model=AccountWithPlan, summary="One billing account")
async def get_account(info: ReadableAccount, rates: RatesStoreDep) -> dict:
    return dict(account_dict(info), plan=await run_in_threadpool(rates.plan_of, info.id))


@router.patch("/{account}", responses=NOT_FOUND, response_model=Account,
              summary="Change status, credit limit, kind or name (admin)")
async def patch_account(_: Admin, account: AccountPath, body: AccountPatch, client: BillingClientDep) -> dict:
    fields = body.model_dump(exclude_none=True)
    if not fields:
        raise invalid("body", "nothing to change", "body")
    return await run_in_threadpool(client.put_account, account, fields, create=False)


@router.delete("/{account}", responses=NOT_FOUND, status_code=204, response_class=Response,
               summary="Delete an account without ledger events (admin)")
async def delete_account(_: Admin, account: AccountPath, client: BillingClientDep) -> Response:
    await run_in_threadpool(client.delete_account, account)
    return Response(status_code=204)


@router.get("/{account}/balance", responses=NOT_FOUND, response_model=Balance,
            summary="Balance, reservations, available credit, live calls (?at=T: as they were at T)")
async def balance(info: ReadableAccount, client: BillingClientDep, store: LedgerStoreDep,
                  at: Annotated[str | None, Query(max_length=40, description=(
                      "time travel: the balance, reservations and last events as they were at this instant "
                      "(ISO 8601 or epoch ms), folded from the ledger events booked until then"))] = None) -> dict:
    if at is None:
        return await run_in_threadpool(client.balance, info.id)
    try:
        at_ms = parse_instant(at)
    except ValueError as exc:
        raise invalid("at", str(exc)) from None
    app = BillingApplication(StoredLedger(store))          # a read of history: no lock, no service needed
    return await run_in_threadpool(asyncio.run, app.balance_at(info.id, at_ms))   # SQL off the loop


@router.post("/{account}/topups", response_model=MoneyResult, responses=MONEY_RESPONSES,
             summary="Top up, exactly once per Idempotency-Key (admin)")
async def topup(_: Admin, account: AccountPath, body: TopupIn, key: IdempotencyKey, response: Response,
                client: BillingClientDep) -> dict:
    result = await run_in_threadpool(client.money, account, "topup", body.amount, key, body.note)
    response.status_code = 200 if result.get("replayed") else 201
    return result


@router.post("/{account}/adjustments", response_model=MoneyResult, responses=MONEY_RESPONSES,
             summary="Adjust or refund, exactly once per Idempotency-Key (admin)")
async def adjustment(_: Admin, account: AccountPath, body: AdjustmentIn, key: IdempotencyKey, response: Response,
                     client: BillingClientDep) -> dict:
    result = await run_in_threadpool(client.money, account, body.kind, body.amount, key, body.note,
                                     cdr_id=body.cdr_id, leg=body.leg)
    response.status_code = 200 if result.get("replayed") else 201
    return result


# -- the account's rate plan ------------------------------------------------------------------

@router.put("/{account}/plan", response_model=PlanAssignment, summary="Rate an account with a plan (admin)",
            responses={404: {"model": Problem, "description": "no such plan"}})
async def assign_plan(_: Admin, account: AccountPath, body: PlanAssign, rates: RatesStoreDep) -> dict:
    await run_in_threadpool(rates.assign, account, body.plan)
    return {"account": account, "plan": body.plan}


@router.delete("/{account}/plan", status_code=204, response_class=Response,
               responses={404: {"model": Problem, "description": "the account has no plan"}},
               summary="Remove an account's plan (admin)")
async def unassign_plan(_: Admin, account: AccountPath, rates: RatesStoreDep) -> Response:
    await run_in_threadpool(rates.unassign, account)
    return Response(status_code=204)


@router.get("/{account}/rates", responses=NOT_FOUND, response_model=AccountRates,
            summary="The rates of the account's plan (its own, else the default plan)")
async def account_rates(info: ReadableAccount, rates: RatesStoreDep, settings: BillingSettingsDep) -> dict:
    plan = await run_in_threadpool(rates.plan_of, info.id) or settings.default_plan
    if not plan:
        return {"plan": None, "items": []}
    stored = await run_in_threadpool(rates.list_rates, plan)
    return {"plan": plan, "items": [RateOut.of(r.id, r.plan, r.rate) for r in stored]}
