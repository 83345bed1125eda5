"""``/v1/calls``: the live calls of every proxy worker, and hanging one up.

The service is api/calls.py (shared with `sipledger calls` / `hangup`).  An
account token lists its own account's calls; a call of another account is
404 like an unknown one.  Hanging up is admin only.
"""
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException, Path, Query
from starlette.concurrency import run_in_threadpool

from ..calls import (
    CALL_ID_PATTERN,
    DEFAULT_REASON,
    REASON_PATTERN,
    BrokerUnknown,
    CallNotFound,
    LiveCallsUnavailable,
)
from ..deps import AccountFilter, Admin, LiveCallsDep, Principal, may_read
from ..schemas import HangupAccepted, LiveCall, LiveCallPage, Problem

router = APIRouter(prefix="/calls", tags=["calls"])

CallId = Annotated[str, Path(pattern=CALL_ID_PATTERN, description="the call's Call-ID")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such live call (or not the token's account)"}}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "the shared live-call table (several proxy instances) does not answer"}}


async def _read(function, *args):
    """A listing in a thread; the shared table down is 503, not an empty list."""
    try:
        return await run_in_threadpool(function, *args)
    except LiveCallsUnavailable as exc:
        raise HTTPException(503, str(exc)[:300]) from None


@router.get("", response_model=LiveCallPage, summary="Live calls, oldest first", responses=UNAVAILABLE)
async def list_calls(calls: LiveCallsDep, account: AccountFilter) -> dict[str, Any]:
    return await _read(calls.list_calls, account)


@router.get("/{call_id}", response_model=LiveCall, summary="One live call", responses={**NOT_FOUND, **UNAVAILABLE})
async def get_call(who: Principal, calls: LiveCallsDep, call_id: CallId) -> dict[str, Any]:
    call = await _read(calls.get, call_id)
    if call is None or not may_read(who, call["account"]):
        raise HTTPException(404, "no such live call")
    return call


@router.delete("/{call_id}", status_code=202, response_model=HangupAccepted, responses={**NOT_FOUND, **UNAVAILABLE},
               summary="Hang up a live call: BYE both ways (a ringing call is cancelled)")
async def hangup_call(who: Admin, calls: LiveCallsDep, call_id: CallId,
                      reason: Annotated[str, Query(pattern=REASON_PATTERN,
                                                   description="the BYE's Reason text")] = DEFAULT_REASON,
                      ) -> dict[str, Any]:
    try:
        return await calls.hangup(call_id, reason, issued_by=f"api:{who.id}")
    except CallNotFound:
        raise HTTPException(404, "no such live call") from None
    except (BrokerUnknown, LiveCallsUnavailable) as exc:
        raise HTTPException(503, str(exc)[:300]) from None
    except (OSError, TimeoutError, KafkaError) as exc:
        raise HTTPException(503, f"the broker did not take the hang-up: {exc!r}"[:300]) from None
