"""The REST API (FastAPI): CDRs and traffic statistics, behind bearer tokens.

``create_app(store, tokens)`` builds the application around a ``CdrStore``
(chdb or a ClickHouse server) and a ``TokenStore``; ``api/serve.py`` runs it
in the embedded topology.  Reference and metric definitions: docs/api.md.

Errors are JSON ``{"detail": ...}``: 401 without a valid token, 403 when a
token asks for what its role may not see, 404 for an unknown (or not yours)
CDR, 422 naming the offending parameter (``detail[].loc``), 503 when the CDR
store cannot answer.
"""

import ipaddress
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator
from starlette.concurrency import run_in_threadpool

from cdr.store.queries import CdrFilter, CdrStore, Cursor, CursorError
from proxy.infra.clickhouse.backend import BackendError

from .tokens import TokenError, TokenInfo, TokenStore

Disposition = Literal["answered", "busy", "no_answer", "cancelled", "failed", "rejected_credit"]
MAX_MS = (2**32 - 1) * 1000      # what a DateTime (and so `setup`) can hold
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


# -- parameter parsing -------------------------------------------------------------

def parse_time(value: Any) -> Any:
    """ISO 8601 (offset optional, UTC when absent) or epoch milliseconds → epoch ms."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    if re.fullmatch(r"\d{1,16}", text):
        ms = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("expected ISO 8601 (2026-11-28T10:00:00Z) or epoch milliseconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        ms = int(moment.timestamp() * 1000)
    if not 0 <= ms <= MAX_MS:
        raise ValueError("out of range (1970-01-01 .. 2106-02-07)")
    return ms


def parse_ip(value: Any) -> Any:
    if value is None:
        return value
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise ValueError("expected an IPv4 or IPv6 address") from None


Time = Annotated[int | None, BeforeValidator(parse_time)]
Ip = Annotated[str | None, BeforeValidator(parse_ip)]
PREFIX_PATTERN = r"^\+?[0-9A-Za-z*#._-]+$"


def prefix_query(description: str) -> Any:
    return Query(max_length=64, pattern=PREFIX_PATTERN, description=description)


CALLER_HELP = "prefix of the caller's number/user (From URI user part, leading + ignored)"
CALLEE_HELP = "prefix of the dialled number (Request-URI user part, leading + ignored)"


def invalid(field: str, message: str, location: str = "query") -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": (location, field),
                                    "msg": message, "input": None}])


def only_params(auth: Any, *names: str):
    """A dependency refusing query parameters the endpoint does not know: a
    misspelt filter must not silently widen the result.  It depends on
    ``auth`` so that authentication is still checked first."""
    allowed = set(names)

    def check(request: Request, _who: Annotated[Any, Depends(auth)]) -> None:
        for name in request.query_params:
            if name not in allowed:
                raise invalid(name, f"unknown parameter; known: {', '.join(sorted(allowed))}")
    return check


# -- response models (for /docs) ----------------------------------------------------

class Call(BaseModel):
    cdr_id: str
    legs: int
    call_id: str
    account: str
    caller_uri: str
    caller_number: str
    caller_ip: str
    caller_user_agent: str
    dialled: str
    dialled_number: str
    callee_uri: str
    domain: str
    proxy: str
    from_tag: str
    to_tag: str
    setup_ms: int
    setup_at: str | None
    ringing_ms: int
    ringing_at: str | None
    answer_ms: int
    answer_at: str | None
    end_ms: int
    end_at: str | None
    duration_ms: int
    billable_s: int
    pdd_ms: int
    sip_code: int
    sip_reason: str
    disposition: str
    hangup_by: str
    hangup_reason: str
    gateway: str
    gateways: list[str]
    target: str
    destination: str
    callee_user_agent: str


class Leg(BaseModel):
    cdr_id: str
    leg: int
    parent_leg: int
    leg_cause: str
    legs: int
    v: int
    call_id: str
    from_tag: str
    to_tag: str
    account: str
    caller_uri: str
    caller_number: str
    caller_ip: str
    caller_user_agent: str
    dialled: str
    dialled_number: str
    callee_uri: str
    target: str
    destination: str
    gateway: str
    domain: str
    callee_user_agent: str
    setup_ms: int
    setup_at: str | None
    ringing_ms: int
    ringing_at: str | None
    answer_ms: int
    answer_at: str | None
    end_ms: int
    end_at: str | None
    duration_ms: int
    billable_s: int
    pdd_ms: int
    sip_code: int
    sip_reason: str
    disposition: str
    call_sip_code: int
    call_sip_reason: str
    call_disposition: str
    hangup_by: str
    hangup_reason: str
    proxy: str


class CallDetail(Call):
    legs_detail: list[Leg]


class CallPage(BaseModel):
    items: list[Call]
    next_cursor: str | None
    limit: int


class Pdd(BaseModel):
    count: int
    mean: float | None
    p50: int | None
    p95: int | None


class StatsRow(BaseModel):
    period: str
    period_start_ms: int
    group: str
    attempts: int
    answered: int
    effective: int
    asr: float | None
    ner: float | None
    acd_s: float | None
    pdd_ms: Pdd


class StatsResponse(BaseModel):
    period: str
    group_by: str
    unit: Literal["call", "leg"]
    rows: list[StatsRow]


# -- the application -------------------------------------------------------------------

def create_app(store: CdrStore, tokens: TokenStore, *, title: str = "sipledger") -> FastAPI:
    app = FastAPI(title=f"{title} API", version="1",
                  description="Call detail records and traffic statistics. "
                              "Bearer token from `sipledger token create`.")
    bearer = HTTPBearer(auto_error=False, description="`sipledger token create` prints one")

    @app.exception_handler(BackendError)
    async def _store_down(request: Request, exc: BackendError) -> JSONResponse:
        return JSONResponse({"detail": f"CDR store unavailable: {str(exc).splitlines()[0]}"},
                            status_code=503)

    @app.exception_handler(TokenError)
    async def _tokens_down(request: Request, exc: TokenError) -> JSONResponse:
        return JSONResponse({"detail": f"token store unavailable: {exc}"}, status_code=503)

    def principal(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> TokenInfo:
        # sync: FastAPI runs it in the thread pool (one SQLite lookup)
        if credentials is None:
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        info = tokens.authenticate(credentials.credentials)
        if info is None:
            raise HTTPException(401, "invalid or revoked token",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return info

    Principal = Annotated[TokenInfo, Depends(principal)]

    def scoped_account(who: TokenInfo, requested: str | None) -> str | None:
        """The account filter a token may use: an account token sees its own only."""
        if who.is_admin:
            return requested
        if requested is not None and requested != who.account:
            raise HTTPException(403, f"this token may only read account {who.account}")
        return who.account

    def time_range(from_ms: int | None, to_ms: int | None) -> None:
        if from_ms is not None and to_ms is not None and to_ms <= from_ms:
            raise invalid("to", "must be after 'from'")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/cdrs", response_model=CallPage, summary="List calls (CDRs), newest first",
             dependencies=[Depends(only_params(
                 principal, "account", "caller", "caller_ip", "callee", "from", "to", "disposition",
                 "gateway", "min_duration", "limit", "cursor"))])
    async def list_cdrs(
        who: Principal,
        account: Annotated[str | None, Query(max_length=255, description="exact account (user@domain)")] = None,
        caller: Annotated[str | None, prefix_query(CALLER_HELP)] = None,
        caller_ip: Annotated[Ip, Query(description="exact caller source IP")] = None,
        callee: Annotated[str | None, prefix_query(CALLEE_HELP)] = None,
        from_: Annotated[Time, Query(alias="from", description="setup time >= (ISO 8601 or epoch ms)")] = None,
        to: Annotated[Time, Query(description="setup time < (ISO 8601 or epoch ms)")] = None,
        disposition: Annotated[list[Disposition] | None, Query(description="call disposition (repeatable)")] = None,
        gateway: Annotated[str | None, Query(max_length=255, description="any leg routed to this gateway")] = None,
        min_duration: Annotated[int | None, Query(ge=0, le=10**9, description="answered duration >= seconds")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
    ) -> dict[str, Any]:
        time_range(from_, to)
        try:
            position = Cursor.decode(cursor) if cursor is not None else None
        except CursorError as exc:
            raise invalid("cursor", str(exc)) from None
        f = CdrFilter(account=scoped_account(who, account), caller=caller, caller_ip=caller_ip,
                      callee=callee, from_ms=from_, to_ms=to,
                      dispositions=tuple(dict.fromkeys(disposition or ())), gateway=gateway,
                      min_duration_ms=None if min_duration is None else min_duration * 1000)
        items, next_position = await run_in_threadpool(store.list_calls, f, limit=limit,
                                                       cursor=position)
        return {"items": items, "limit": limit,
                "next_cursor": next_position.encode() if next_position else None}

    @app.get("/v1/cdrs/{cdr_id}", response_model=CallDetail, summary="One call with its legs",
             responses={404: {"description": "no such CDR (or not the token's account)"}},
             dependencies=[Depends(only_params(principal))])
    async def get_cdr(who: Principal,
                      cdr_id: Annotated[str, Path(pattern=_UUID, description="the CDR id (a UUID)")]
                      ) -> dict[str, Any]:
        call = await run_in_threadpool(store.get_call, cdr_id.lower())
        # another account's CDR is "not found", not "forbidden": ids do not leak
        if call is None or (not who.is_admin and call["account"] != who.account):
            raise HTTPException(404, "no such CDR")
        return call

    @app.get("/v1/stats", response_model=StatsResponse,
             summary="ASR, NER, ACD, PDD per period and gateway / destination prefix",
             dependencies=[Depends(only_params(
                 principal, "period", "group_by", "prefix_len", "account", "caller", "callee", "from", "to",
                 "gateway"))])
    async def stats(
        who: Principal,
        period: Literal["hour", "day", "month"] = "day",
        group_by: Literal["none", "gateway", "prefix"] = "none",
        prefix_len: Annotated[int, Query(ge=1, le=16, description="digits of the dialled number "
                                                                  "when group_by=prefix")] = 2,
        account: Annotated[str | None, Query(max_length=255)] = None,
        caller: Annotated[str | None, prefix_query(CALLER_HELP)] = None,
        callee: Annotated[str | None, prefix_query(CALLEE_HELP)] = None,
        from_: Annotated[Time, Query(alias="from")] = None,
        to: Time = None,
        gateway: Annotated[str | None, Query(max_length=255)] = None,
    ) -> dict[str, Any]:
        time_range(from_, to)
        f = CdrFilter(account=scoped_account(who, account), caller=caller, callee=callee,
                      from_ms=from_, to_ms=to, gateway=gateway)
        rows = await run_in_threadpool(store.stats, f, period=period, group_by=group_by,
                                       prefix_len=prefix_len)
        return {"period": period, "group_by": group_by,
                "unit": "leg" if group_by == "gateway" else "call", "rows": rows}

    return app
