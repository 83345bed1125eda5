"""The FastAPI application: the routers of api/routes/ and the errors they share.

Why apart from the process (api/serve.py): building the app is pure -- given
what the process opened (``AppState``, api/state.py), it returns the app --
so tests build exactly the app production serves, on stores of their own.

Errors are JSON ``{"detail": ...}``; see docs/api.md for the statuses.  The
domain's exceptions are mapped here once, so routes just call the stores:
``LedgerError`` carries its status, ``RatingError`` reads as 404 / 409 / 422,
the provisioning service's ``ProvisioningError`` (and ``TokenRefused``) as
400 / 404 / 409 (``refusal_status``), a store that cannot answer is 503.
"""
from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from billing.errors import LedgerError
from billing.rating.csvfile import CsvImportError
from billing.rating.model import RatingError
from proxy.infra.clickhouse.backend import BackendError
from proxy.provisioning.models import ProvisioningError

from .panel import mount_panel
from .routes import api_router, health, metrics, session
from .sessions import Sessions
from .state import AppState
from .tokens import TokenError, TokenRefused

__all__ = ["create_app"]


def rating_status(message: str) -> int:
    """The rates store words its refusals; their status follows from the words."""
    if "does not exist" in message or "has no plan" in message:
        return 404
    if "already exists" in message or "assigned to" in message or "changed while" in message:
        return 409
    return 422


# The provisioning service words its refusals for the operator (the CLI prints
# them as they are) and knows nothing of HTTP; the status follows from the words.
# 404: the thing the request names is missing -- not a thing it refers to
# ("route: gateway gw9 does not exist; add it with ..." is a 400).
_MISSING = re.compile(
    r"^(?:(?:user|domain|alias|gateway|carrier|route|dialplan rule|media destination) \S+ does not exist"
    r"|.+ is not in (?:blacklist|group) \S+|\S+ \(\w+\) is not trusted|\S+ has no forwarding set"
    r"|prefix .+ requires no group|no token with id .+"
    r"|no route for .+|no rule of dialplan .+)$")
_CONFLICT = re.compile(r"already exists|is already |is used by |still has |is a forwarding target|"
                       r"cannot shadow|is an alias; delete|^conflicting change")


def refusal_status(message: str) -> int:
    """400 / 404 / 409 for a provisioning refusal (docs/api.md "Provisioning");
    503 when the store itself failed (``SqlStore``: "provisioning database ...")."""
    if message.startswith("provisioning database "):
        return 503
    if _MISSING.match(message):
        return 404
    return 409 if _CONFLICT.search(message) else 400


async def _provisioning_refused(request: Request, exc: Exception) -> JSONResponse:
    message = str(exc)
    return JSONResponse({"detail": message}, status_code=refusal_status(message))


async def _store_down(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"CDR store unavailable: {str(exc).splitlines()[0]}"}, status_code=503)


async def _tokens_down(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"token store unavailable: {exc}"}, status_code=503)


async def _ledger_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LedgerError)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


async def _rating_refused(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, CsvImportError):
        return JSONResponse({"detail": str(exc), "errors": list(exc.errors)}, status_code=422)
    return JSONResponse({"detail": str(exc)}, status_code=rating_status(str(exc)))


def create_app(state: AppState, *, title: str = "sipledger") -> FastAPI:
    """The API over ``state`` (installed on ``app.state``; the caller owns and closes it)."""
    app = FastAPI(title=f"{title} API", version="1",
                  description="Call detail records, traffic statistics, billing accounts, ledger, "
                              "reports and rates. Bearer token from `sipledger token create`.")
    state.install(app)
    app.state.sessions = Sessions()          # the panel's logins (POST /v1/session)
    app.add_exception_handler(BackendError, _store_down)
    app.add_exception_handler(TokenError, _tokens_down)
    app.add_exception_handler(LedgerError, _ledger_refused)
    app.add_exception_handler(RatingError, _rating_refused)
    app.add_exception_handler(ProvisioningError, _provisioning_refused)
    app.add_exception_handler(TokenRefused, _provisioning_refused)
    app.include_router(health.router)
    app.include_router(metrics.scrape_router)
    app.include_router(api_router)
    app.include_router(session.login_router)     # POST /v1/session: the one /v1 route without a token
    mount_panel(app)                         # the web panel at /panel/ (docs/panel.md)
    return app
