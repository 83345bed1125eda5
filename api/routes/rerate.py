"""``/v1/rerate``: rerate a period's calls, list and show the runs, export a run (admin).

A rerate (docs/rerating.md) prices the debited calls answered in a period
again with the rates valid at each call's time -- or one plan -- and books a
``rerate`` correction for each call whose cost changed.  It is a money
command: it runs in the billing service (billing/client.py, the ledger's one
writer) like a top-up, or on the ledger under its lock when no service runs.
Runs are read from the billing database (``rerate_run``).
"""
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from billing.reports.build import rerate_report
from billing.reports.export import CONTENT_TYPES, report_bytes

from ..deps import Admin, BillingClientDep, LedgerStoreDep
from ..params import invalid, parse_instant
from ..schemas import Problem, RerateIn, RerateRun, RerateRunList

router = APIRouter(prefix="/rerate", tags=["rerate"])

RunId = Annotated[str, Path(max_length=36, pattern=r"^[0-9a-f-]{36}$", description="a run's id")]
NO_RUN: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such run"}}


@router.post("", response_model=RerateRun, status_code=201, summary="Rerate a period (admin)",
             responses={200: {"model": RerateRun, "description": "dry_run: what would change; nothing booked"},
                        201: {"model": RerateRun, "description": "the run, recorded; its corrections booked"},
                        404: {"model": Problem, "description": "no such account or plan"}})
async def rerate(who: Admin, body: RerateIn, client: BillingClientDep, response: Response) -> dict:
    try:
        from_ms, to_ms = parse_instant(body.from_), parse_instant(body.to, end=True)
    except ValueError as exc:
        raise invalid("from/to", str(exc), "body") from None
    if from_ms >= to_ms:
        raise invalid("from", "must be before to", "body")
    result = await run_in_threadpool(client.rerate, from_ms, to_ms, account=body.account, plan=body.plan,
                                     dry_run=body.dry_run, who=f"api:{who.name or who.id}")
    response.status_code = 200 if body.dry_run else 201
    return result


@router.get("", response_model=RerateRunList, summary="Rerate runs, newest first (admin)")
async def list_runs(_: Admin, store: LedgerStoreDep,
                    limit: Annotated[int, Query(ge=1, le=1000, description="how many runs")] = 100) -> dict:
    runs = await run_in_threadpool(store.runs, limit=limit)
    return {"items": [r.to_dict() for r in runs]}


async def _run(store, run_id: str) -> dict:
    run = await run_in_threadpool(store.get_run, run_id)
    if run is None:
        raise HTTPException(404, f"rerate run {run_id} does not exist")
    return run.to_dict()


@router.get("/{run_id}", response_model=RerateRun, responses=NO_RUN, summary="One rerate run (admin)")
async def get_run(_: Admin, run_id: RunId, store: LedgerStoreDep) -> dict:
    return await _run(store, run_id)


@router.get("/{run_id}/export", response_class=StreamingResponse, summary="A run's per-account deltas as a file "
            "(admin)", responses={**NO_RUN, 200: {"description": "the deltas (Content-Disposition: attachment)",
                                                  "content": {media: {} for media in CONTENT_TYPES.values()}}})
async def export_run(_: Admin, run_id: RunId, store: LedgerStoreDep,
                     fmt: Annotated[str, Query(alias="format", pattern="^(csv|parquet|xlsx)$",
                                               description="csv | parquet | xlsx")] = "csv") -> StreamingResponse:
    report = rerate_report(await _run(store, run_id))
    return StreamingResponse(report_bytes(report, fmt), media_type=CONTENT_TYPES[fmt],
                             headers={"Content-Disposition": f'attachment; filename="rerate-{run_id}.{fmt}"'})
