"""What every route depends on, as ``Annotated`` aliases: who asks, which
account they may read, and the stores this process opened.

Why: routes are plain module-level functions (api/routes/); what they need
arrives through these aliases, not through closures over a factory's
arguments, and each rule below is written once for the whole API.

* The stores are opened once by the process entry (api/serve.py, through
  api/state.py) and put on ``app.state``; a store this process was started
  without (a bare CDR API has no billing database) is a 503 naming it.
* ``Principal``: the bearer token's ``TokenInfo`` (401 without a valid one).
* ``Admin``: the principal, when it is an admin token (403 otherwise).
* The rule for accounts (docs/api.md, "Other accounts"): an account token may
  read its own account only.  Naming any other account -- in the path or in
  ``account=`` -- is 403, whether that account exists or not, so the answer
  tells nothing about other accounts.  An admin naming an account that does
  not exist gets 404 (``ReadableAccount``).  A resource found by its own id
  (``/v1/cdrs/{cdr_id}``) that belongs to another account is 404, exactly as
  an id that does not exist: ``may_read`` is the one predicate behind both.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from billing.client import BillingClient
from billing.ledger.accounts import AccountInfo
from billing.ledger.clickhouse import LedgerQueries
from billing.ledger.store import LedgerStore
from billing.rating.store import RatesStore
from cdr.store.queries import CdrStore
from proxy.infra.config import BillingSettings
from proxy.provisioning.store import ProvisioningStore
from proxy.routing.store import RoutingStore

from .calls import LiveCalls
from .sessions import PREFIX as SESSION_PREFIX
from .tokens import TokenInfo, TokenStore

__all__ = ["CdrStoreDep", "TokenStoreDep", "ProvisioningStoreDep", "RoutingStoreDep", "LedgerStoreDep", "RatesStoreDep", "BillingClientDep",
           "LedgerQueriesDep", "BillingSettingsDep", "LiveCallsDep", "Principal", "Admin", "require_admin", "may_read",
           "scope_account", "AccountFilter", "AccountPath", "ReadableAccount"]


# -- the stores, from app.state ----------------------------------------------------------------

def _from_state(request: Request, name: str, what: str) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise HTTPException(503, f"{what} is not available in this process")
    return value


def get_cdr_store(request: Request) -> CdrStore:
    return _from_state(request, "cdr_store", "the CDR store")


def get_token_store(request: Request) -> TokenStore:
    return _from_state(request, "token_store", "the token store")


def get_ledger_store(request: Request) -> LedgerStore:
    return _from_state(request, "ledger_store", "the billing database")


def get_rates_store(request: Request) -> RatesStore:
    return _from_state(request, "rates_store", "the billing database")


def get_billing_client(request: Request) -> BillingClient:
    return _from_state(request, "billing_client", "the billing service")


def get_ledger_queries(request: Request) -> LedgerQueries:
    return _from_state(request, "ledger_queries", "the ledger store (ClickHouse)")


def get_live_calls(request: Request) -> LiveCalls:
    return _from_state(request, "live_calls", "the live-call list")


def get_provisioning_store(request: Request) -> ProvisioningStore:
    return _from_state(request, "provisioning_store", "the provisioning database")


def get_routing_store(request: Request) -> RoutingStore:
    return _from_state(request, "routing_store", "the provisioning database")


def get_billing_settings(request: Request) -> BillingSettings:
    return getattr(request.app.state, "billing_settings", None) or BillingSettings()


CdrStoreDep = Annotated[CdrStore, Depends(get_cdr_store)]
TokenStoreDep = Annotated[TokenStore, Depends(get_token_store)]
LedgerStoreDep = Annotated[LedgerStore, Depends(get_ledger_store)]
RatesStoreDep = Annotated[RatesStore, Depends(get_rates_store)]
BillingClientDep = Annotated[BillingClient, Depends(get_billing_client)]
LedgerQueriesDep = Annotated[LedgerQueries, Depends(get_ledger_queries)]
BillingSettingsDep = Annotated[BillingSettings, Depends(get_billing_settings)]
LiveCallsDep = Annotated[LiveCalls, Depends(get_live_calls)]
ProvisioningStoreDep = Annotated[ProvisioningStore, Depends(get_provisioning_store)]
RoutingStoreDep = Annotated[RoutingStore, Depends(get_routing_store)]


# -- who asks ----------------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="`sipledger token create` prints one")


def current_token(request: Request, tokens: TokenStoreDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> TokenInfo:
    # sync: FastAPI runs it in the thread pool (one SQLite lookup); cached per request
    if credentials is None:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    sessions = getattr(request.app.state, "sessions", None)      # the panel's logins (api/sessions.py)
    if sessions is not None and credentials.credentials.startswith(SESSION_PREFIX):
        info = sessions.authenticate(credentials.credentials)
    else:
        info = tokens.authenticate(credentials.credentials)
    if info is None:
        raise HTTPException(401, "invalid or revoked token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return info


Principal = Annotated[TokenInfo, Depends(current_token)]


def require_admin(who: Principal) -> TokenInfo:
    if not who.is_admin:
        raise HTTPException(403, "an admin token is required")
    return who


Admin = Annotated[TokenInfo, Depends(require_admin)]


# -- which account -----------------------------------------------------------------------------

def may_read(who: TokenInfo, account: str) -> bool:
    """The one predicate: admin tokens read every account, account tokens their own."""
    return who.is_admin or account == who.account


def scope_account(who: TokenInfo, account: str) -> str:
    """``account`` when ``who`` may read it, else 403 -- whether it exists or not."""
    if not may_read(who, account):
        raise HTTPException(403, f"this token may only read account {who.account}")
    return account


def account_filter(who: Principal,
                   account: Annotated[str | None, Query(max_length=255, description="exact account (user@domain); "
                                                        "an account token: its own")] = None) -> str | None:
    """``account=`` of the list endpoints: an admin's as given (None: every account),
    an account token's always its own."""
    if account is None:
        return None if who.is_admin else who.account
    return scope_account(who, account)


AccountFilter = Annotated[str | None, Depends(account_filter)]
AccountPath = Annotated[str, Path(max_length=255, pattern=r"^\S+$", description="user@domain")]


def readable_account(who: Principal, account: AccountPath, store: LedgerStoreDep) -> AccountInfo:
    """The billing account in the path: 403 if not the token's, 404 if it does not exist."""
    scope_account(who, account)
    info = store.get_account(account)
    if info is None:
        raise HTTPException(404, f"account {account} does not exist")
    return info


ReadableAccount = Annotated[AccountInfo, Depends(readable_account)]
