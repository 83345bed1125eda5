"""Rate plans and their rates (admin only): CRUD, CSV export, and CSV import
(all or nothing: a file with one bad line imports nothing and lists every bad
line).  An account's plan and rates are under ``/v1/accounts`` (accounts.py).
"""
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from billing.rating.csvfile import plan_import, write_rates

from ..deps import BillingSettingsDep, RatesStoreDep, require_admin
from ..schemas import ImportProblem, ImportResult, Plan, PlanIn, PlanList, RateIn, RateList, RateOut

router = APIRouter(tags=["rates"], dependencies=[Depends(require_admin)])   # spans /rate-plans and /rates
CSV = "text/csv; charset=utf-8"


@router.get("/rate-plans", response_model=PlanList, summary="Rate plans (admin)")
async def list_plans(rates: RatesStoreDep) -> dict:
    plans = await run_in_threadpool(rates.list_plans)
    return {"items": [{"name": p.name, "timezone": p.timezone, "currency": p.currency, "rates": p.rates,
                       "accounts": p.accounts} for p in plans]}


@router.post("/rate-plans", status_code=201, response_model=Plan, summary="Create a rate plan (admin)")
async def create_plan(body: PlanIn, rates: RatesStoreDep) -> dict:
    await run_in_threadpool(rates.create_plan, body.name, body.timezone)
    return {"name": body.name, "timezone": body.timezone}


@router.post("/rate-plans/import", response_model=ImportResult,
             summary="Import rates from CSV, all or nothing (admin)",
             responses={422: {"model": ImportProblem, "description": "nothing imported; one error per bad line"}},
             openapi_extra={"requestBody": {"required": True, "description": "rates CSV, as /export writes it",
                                            "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_rates(
    request: Request,
    rates: RatesStoreDep,
    settings: BillingSettingsDep,
    plan: Annotated[str | None, Query(description="put every row in this plan")] = None,
    replace: Annotated[bool, Query(description="replace the plans' rates instead of adding")] = False,
    timezone: Annotated[str | None, Query(description="IANA zone of the plans created or touched")] = None,
) -> dict:
    # the raw body, whatever its Content-Type says: a CSV file, perhaps with a BOM
    csv = (await request.body()).decode("utf-8-sig", errors="replace")

    def run() -> dict:
        version = rates.version()
        result = plan_import(csv, existing=rates.get_plans(), plan=plan, replace=replace,
                             currency=settings.currency, timezone=settings.timezone, set_timezone=timezone)
        rates.put_plans(result.plans, expect_version=version)
        return {"added": sum(result.added.values()), "created": sorted(result.created)}   # rates, all plans
    return await run_in_threadpool(run)


@router.delete("/rate-plans/{plan}", status_code=204, response_class=Response,
               summary="Delete a plan and its rates (admin)")
async def delete_plan(plan: str, rates: RatesStoreDep) -> Response:
    await run_in_threadpool(rates.delete_plan, plan)
    return Response(status_code=204)


@router.get("/rate-plans/{plan}/rates", response_model=RateList, summary="A plan's rates (admin)")
async def plan_rates(plan: str, rates: RatesStoreDep) -> dict:
    stored = await run_in_threadpool(rates.list_rates, plan)
    return {"items": [RateOut.of(r.id, r.plan, r.rate) for r in stored]}


@router.post("/rate-plans/{plan}/rates", status_code=201, response_model=RateOut, summary="Add a rate (admin)")
async def add_rate(plan: str, body: RateIn, rates: RatesStoreDep) -> RateOut:
    rate = body.to_rate()
    rate_id = await run_in_threadpool(rates.add_rate, plan, rate)
    return RateOut.of(rate_id, plan, rate)


@router.get("/rate-plans/{plan}/export", response_class=PlainTextResponse, summary="A plan as CSV (admin)",
            responses={200: {"content": {CSV: {}}}})
async def export_plan(plan: str, rates: RatesStoreDep) -> PlainTextResponse:
    rate_plan = await run_in_threadpool(rates.get_plan, plan)
    return PlainTextResponse(write_rates([rate_plan]), media_type=CSV)


@router.get("/rates/{rate_id}", response_model=RateOut, summary="One rate (admin)")
async def get_rate(rate_id: int, rates: RatesStoreDep) -> RateOut:
    stored = await run_in_threadpool(rates.get_rate, rate_id)
    return RateOut.of(stored.id, stored.plan, stored.rate)


@router.put("/rates/{rate_id}", response_model=RateOut, summary="Replace a rate (admin)")
async def put_rate(rate_id: int, body: RateIn, rates: RatesStoreDep) -> RateOut:
    await run_in_threadpool(rates.update_rate, rate_id, body.to_rate())
    stored = await run_in_threadpool(rates.get_rate, rate_id)
    return RateOut.of(stored.id, stored.plan, stored.rate)


@router.delete("/rates/{rate_id}", status_code=204, response_class=Response, summary="Delete a rate (admin)")
async def delete_rate(rate_id: int, rates: RatesStoreDep) -> Response:
    await run_in_threadpool(rates.delete_rate, rate_id)
    return Response(status_code=204)
