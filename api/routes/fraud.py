"""``/v1/fraud``: the fraud alerts the proxy workers raised, newest first (admin
only; docs/fraud.md).  `sipledger fraud list` reads the same rows."""
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from proxy.provisioning.models import ProvisioningError
from proxy.provisioning.store import ProvisioningStore

from ..deps import Admin
from ..params import Limit, Range
from ..schemas import FraudAlertPage

router = APIRouter(prefix="/fraud", tags=["fraud"])


@router.get("", response_model=FraudAlertPage, summary="Fraud alerts, newest first (admin)")
async def list_alerts(
    request: Request,
    who: Admin,
    range_: Range,
    user: Annotated[str | None, Query(max_length=330, description="user@domain that placed the calls")] = None,
    severity: Literal["warning", "critical"] | None = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    url = getattr(request.app.state, "provisioning_url", None)
    if not url:
        raise HTTPException(503, "no provisioning database configured")

    def read() -> list[dict[str, Any]]:
        store = ProvisioningStore(url)
        try:
            store.create_schema()
            rows = store.fraud_alerts(since=None if range_.from_ms is None else range_.from_ms / 1000,
                                      user=user, severity=severity, limit=limit)
        except ProvisioningError as exc:
            raise HTTPException(503, str(exc)) from None
        finally:
            store.close()
        if range_.to_ms is not None:
            rows = [r for r in rows if r["at"] * 1000 < range_.to_ms]
        return rows

    return {"items": await run_in_threadpool(read)}
