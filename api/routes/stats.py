"""``/v1/stats``: ASR, NER, ACD and PDD per period, per gateway or destination prefix.

Definitions (RFC 6076, ITU-T E.411) and the unit counted (call or leg): docs/api.md.
"""
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from cdr.store.queries import CdrFilter

from ..deps import AccountFilter, CdrStoreDep
from ..params import Callee, Caller, Gateway, Range
from ..schemas import StatsResponse

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("", response_model=StatsResponse,
            summary="ASR, NER, ACD, PDD per period and gateway / destination prefix")
async def stats(
    store: CdrStoreDep,
    account: AccountFilter,
    range_: Range,
    period: Literal["hour", "day", "month"] = "day",
    group_by: Literal["none", "gateway", "prefix"] = "none",
    prefix_len: Annotated[int, Query(ge=1, le=16, description="digits of the dialled number "
                                                              "when group_by=prefix")] = 2,
    caller: Caller = None,
    callee: Callee = None,
    gateway: Gateway = None,
) -> dict[str, Any]:
    f = CdrFilter(account=account, caller=caller, callee=callee, from_ms=range_.from_ms, to_ms=range_.to_ms,
                  gateway=gateway)
    rows = await run_in_threadpool(store.stats, f, period=period, group_by=group_by, prefix_len=prefix_len)
    return {"period": period, "group_by": group_by,
            "unit": "leg" if group_by == "gateway" else "call", "rows": rows}
