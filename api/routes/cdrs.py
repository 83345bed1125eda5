"""``/v1/cdrs``: calls (CDRs) from the CDR store, newest first, and one call with its legs.

A CDR of another account is 404 like an unknown id (``may_read``): CDR ids
do not leak.  ``account=`` follows the API's rule (api/deps.py).
"""
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from cdr.archive.rebuild import RebuildLimits, rebuild_cdrs
from cdr.store.queries import CdrFilter, Cursor, CursorError

from ..deps import AccountFilter, Admin, CdrStoreDep, Principal, may_read
from ..params import Callee, Caller, Gateway, Ip, Limit, Range, invalid
from ..schemas import CallDetail, CallPage, Disposition, Problem, RebuildReport, RebuildRequest
from .trace import linked_trace

router = APIRouter(prefix="/cdrs", tags=["cdrs"])

UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


@router.get("", response_model=CallPage, summary="List calls (CDRs), newest first")
async def list_cdrs(
    store: CdrStoreDep,
    account: AccountFilter,
    range_: Range,
    caller: Caller = None,
    caller_ip: Annotated[Ip, Query(description="exact caller source IP")] = None,
    callee: Callee = None,
    disposition: Annotated[list[Disposition] | None, Query(description="call disposition (repeatable)")] = None,
    gateway: Gateway = None,
    min_duration: Annotated[int | None, Query(ge=0, le=10**9, description="answered duration >= seconds")] = None,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    try:
        position = Cursor.decode(cursor) if cursor is not None else None
    except CursorError as exc:
        raise invalid("cursor", str(exc)) from None
    f = CdrFilter(account=account, caller=caller, caller_ip=caller_ip, callee=callee,
                  from_ms=range_.from_ms, to_ms=range_.to_ms,
                  dispositions=tuple(dict.fromkeys(disposition or ())), gateway=gateway,
                  min_duration_ms=None if min_duration is None else min_duration * 1000)
    items, next_position = await run_in_threadpool(store.list_calls, f, limit=limit, cursor=position)
    return {"items": items, "limit": limit,
            "next_cursor": next_position.encode() if next_position else None}


@router.get("/{cdr_id}", response_model=CallDetail, summary="One call with its legs",
            responses={404: {"model": Problem, "description": "no such CDR (or not the token's account)"}})
async def get_cdr(who: Principal, store: CdrStoreDep,
                  cdr_id: Annotated[str, Path(pattern=UUID, description="the CDR id (a UUID)")]) -> dict[str, Any]:
    call = await run_in_threadpool(store.get_call, cdr_id.lower())
    if call is None or not may_read(who, call["account"]):
        raise HTTPException(404, "no such CDR")
    call["trace_url"] = await run_in_threadpool(linked_trace, store, call.get("call_id") or "")
    return call


@router.post("/rebuild", response_model=RebuildReport, summary="Rebuild CDRs from the event archive (admin)",
             responses={422: {"description": "to is not after from"}})
async def rebuild(_admin: Admin, store: CdrStoreDep, request: Request, body: RebuildRequest) -> dict[str, Any]:
    """Re-fold the CDRs of the calls whose first event is in [from, to) with the
    current fold; writes added and changed calls' legs (not with ``dry_run``).
    The same service as ``sipledger cdr rebuild`` (docs/operations.md)."""
    if body.to <= body.from_:
        raise invalid("to", "must be after from")
    limits = getattr(request.app.state, "rebuild_limits", None) or RebuildLimits()
    report = await run_in_threadpool(rebuild_cdrs, store, limits, body.from_, body.to, dry_run=body.dry_run)
    return report.as_dict()
