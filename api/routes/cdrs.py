"""``/v1/cdrs``: calls (CDRs) from the CDR store, newest first, and one call with its legs.

A CDR of another account is 404 like an unknown id (``may_read``): CDR ids
do not leak.  ``account=`` follows the API's rule (api/deps.py).
"""
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from starlette.concurrency import run_in_threadpool

from cdr.store.queries import CdrFilter, Cursor, CursorError

from ..deps import AccountFilter, CdrStoreDep, Principal, may_read
from ..params import Callee, Caller, Gateway, Ip, Limit, Range, invalid
from ..schemas import CallDetail, CallPage, Disposition, Problem
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
