"""``/v1/quality``: ASR, NER, SEER, ACD, PDD per 5 min / hour / day bucket and
gateway (with its probe state), destination prefix or account.

The same function as `sipledger quality` (api/quality.py); definitions in
docs/quality.md.  An account token sees only its own calls.
"""
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from cdr.store.queries import CdrFilter

from ..deps import AccountFilter, CdrStoreDep
from ..params import Callee, Gateway, Range
from ..quality import Bucket, QualityGroup, gateway_states, quality
from ..schemas import QualityResponse

router = APIRouter(prefix="/quality", tags=["stats"])


@router.get("", response_model=QualityResponse,
            summary="ASR, NER, SEER, ACD, PDD per bucket and gateway / prefix / account")
async def get_quality(
    request: Request,
    store: CdrStoreDep,
    account: AccountFilter,
    range_: Range,
    bucket: Bucket = "hour",
    group_by: QualityGroup = "gateway",
    prefix_len: Annotated[int, Query(ge=1, le=16, description="digits of the dialled number "
                                                              "when group_by=prefix")] = 2,
    callee: Callee = None,
    gateway: Gateway = None,
) -> dict[str, Any]:
    f = CdrFilter(account=account, callee=callee, from_ms=range_.from_ms, to_ms=range_.to_ms, gateway=gateway)
    state = request.app.state

    def run() -> dict[str, Any]:
        probes = (gateway_states(getattr(state, "provisioning_url", None), getattr(state, "run_dir", None))
                  if group_by == "gateway" else {})
        return quality(store, f, bucket=bucket, group_by=group_by, prefix_len=prefix_len, probes=probes)

    return await run_in_threadpool(run)
