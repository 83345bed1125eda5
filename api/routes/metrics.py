"""``/metrics``: the node's Prometheus scrape target; ``/v1/metrics``: the same figures as rows.

Both read ``proxy.infra.metrics.snapshot`` -- every process of this `up`
through the multiprocess directory -- as `sipledger stats` does.  /metrics
answers loopback without a token (the Prometheus next to the node) and any
other address with an admin token; /v1/metrics is admin only.  docs/metrics.md.
"""
from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from proxy.infra import metrics

from ..deps import Admin, bearer, get_token_store
from ..schemas import MetricsResponse

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

scrape_router = APIRouter(tags=["metrics"])
router = APIRouter(prefix="/metrics", tags=["metrics"])


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def scrape_allowed(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """Loopback, or an admin bearer token."""
    if _loopback(request):
        return
    if credentials is None:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    info = get_token_store(request).authenticate(credentials.credentials)
    if info is None or not info.is_admin:
        raise HTTPException(403, "an admin token is required from other than loopback")


@scrape_router.get("/metrics", include_in_schema=False, dependencies=[Depends(scrape_allowed)])
async def scrape() -> Response:
    body = await run_in_threadpool(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE)


@router.get("", response_model=MetricsResponse,
            summary="The node's metrics as rows (what `sipledger stats` prints)")
async def rows(_: Admin, group: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z]+$",
                                                         description="core, tm, sl, dialog, usrloc, auth, "
                                                                     "events, cdr, radius ...")] = None
               ) -> dict[str, Any]:
    families = await run_in_threadpool(metrics.snapshot)
    return {"group": group, "rows": [{"name": n, "value": v} for n, v in metrics.figures(families, group)]}
