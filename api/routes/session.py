"""``/v1/session``: log in at the web panel (docs/panel.md).

``POST`` exchanges an API token, or an account's SIP credentials, for a
short-lived session token of the matching role (api/sessions.py); it is the
one /v1 route that takes no bearer token, so it is on a router of its own
(``login_router``, included by api/main.py beside ``/v1``'s shared auth).  Wrong answers are counted per
source and per account and lock them (429) like the registrar's lockout.
``GET`` says who a token is (the panel shows the views of that role);
``DELETE`` ends the session presented.
"""
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from ..deps import Principal, TokenStoreDep, bearer, get_provisioning_store
from ..schemas import Problem, SessionIn, SessionOut, WhoAmI
from ..sessions import PREFIX, Sessions, check_sip_password

router = APIRouter(prefix="/session", tags=["session"])
login_router = APIRouter(prefix="/v1/session", tags=["session"])

WRONG = "wrong user or password"


def _account(address: str) -> str:
    """user@domain as the proxy authenticates it (the domain in lower case): the
    billing account, and the key failures are counted under."""
    user, at, domain = address.partition("@")
    return f"{user}{at}{domain.lower()}"


def sessions_of(request: Request) -> Sessions:
    return request.app.state.sessions


@login_router.post("", status_code=201, response_model=SessionOut, summary="Log in: a session token (no bearer needed)",
             responses={401: {"model": Problem, "description": "wrong token, user or password"},
                        422: {"description": "a malformed body"},
                        429: {"model": Problem, "description": "too many wrong answers: locked for a while"},
                        503: {"model": Problem, "description": "a store the login needs cannot answer"}})
async def login(body: SessionIn, request: Request, tokens: TokenStoreDep) -> dict:
    sessions = sessions_of(request)
    ip = request.client.host if request.client is not None else ""
    user = _account(body.user.strip()) if body.user.strip() else None     # one lock key per account, any case
    if sessions.locked(ip, user):
        raise HTTPException(429, "too many failed logins; try again later")
    if body.token:
        info = await run_in_threadpool(tokens.authenticate, body.token.strip())
        if info is None:
            sessions.failed(ip, None)
            raise HTTPException(401, "invalid or revoked token")
        session = sessions.issue(info.role, info.account, f"panel via token {info.id}")
    else:
        if user is None or "@" not in user or not body.password or \
                not await run_in_threadpool(check_sip_password, get_provisioning_store(request), user, body.password):
            sessions.failed(ip, user)
            raise HTTPException(401, WRONG)
        sessions.succeeded(ip, user)
        session = sessions.issue("account", user, "panel login")
    return {"token": session.token, "role": session.info.role, "account": session.info.account,
            "expires_ms": int(session.expires_at * 1000)}


@router.get("", response_model=WhoAmI, summary="Who this token is (role, account)")
async def whoami(who: Principal, request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> dict:
    expires = sessions_of(request).expires_at(credentials.credentials) if credentials else None
    return {"role": who.role, "account": who.account, "name": who.name,
            "expires_ms": None if expires is None else int(expires * 1000)}


@router.delete("", status_code=204, response_class=Response, summary="Log out: end this session token")
async def logout(_: Principal, request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Response:
    if credentials is not None and credentials.credentials.startswith(PREFIX):
        sessions_of(request).revoke(credentials.credentials)
    return Response(status_code=204)
