"""The API's routers, one module per resource; ``api_router`` is ``/v1`` with all of them.

Why one place: every ``/v1`` route gets the shared refusals here, once --
the error responses in /docs and ``known_params`` (an unknown query
parameter is a 422, after authentication) -- instead of per route.
"""
from fastapi import APIRouter, Depends

from ..params import known_params
from ..schemas import Problem
from . import (
    accounts,
    calls,
    cdrs,
    fraud,
    health,
    ledger,
    metrics,
    quality,
    rates,
    reports,
    rerate,
    session,
    stats,
    trace,
)
from .provisioning import PROVISIONING

__all__ = ["api_router", "health", "metrics", "session", "ROUTERS", "PROVISIONING"]

ROUTERS = tuple(module.router for module in (cdrs, calls, trace, stats, quality, fraud, accounts, ledger, reports,
                                              rates, metrics, session)) + (rerate.router,) + PROVISIONING

api_router = APIRouter(prefix="/v1", dependencies=[Depends(known_params)], responses={
    401: {"model": Problem, "description": "no token, or an unknown or revoked one"},
    403: {"model": Problem, "description": "the token may not do this or read this account"},
    503: {"model": Problem, "description": "a store this route needs cannot answer"},
})
for router in ROUTERS:
    api_router.include_router(router)
