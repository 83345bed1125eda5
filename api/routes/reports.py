"""Reports as file downloads: one account's (``/v1/accounts/{account}/reports/{report}``)
and over all accounts (``/v1/reports/{report}``, admin).

Built from the ledger's ClickHouse copy (billing/reports/) and streamed in
the chosen format; money keeps its exact decimals in every format.  The
period is ``from`` / ``to`` or ``month`` (api/params.py).
"""
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from billing.errors import LedgerError
from billing.ledger.accounts import AccountInfo
from billing.ledger.clickhouse import LedgerQueries
from billing.rating.model import RatingError
from billing.reports.build import REPORTS, build_report
from billing.reports.export import CONTENT_TYPES, report_bytes
from billing.reports.sources import ClickHouseSource

from ..deps import Admin, LedgerQueriesDep, ReadableAccount
from ..params import ReportPeriod, TimeRange
from ..schemas import Problem

router = APIRouter(tags=["reports"])     # spans /accounts/{account}/reports and /reports

Format = Annotated[Literal["csv", "parquet", "xlsx"], Query(alias="format", description="file format")]
FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the report as a file (Content-Disposition: attachment)",
          "content": {media: {} for media in CONTENT_TYPES.values()}},
    404: {"model": Problem, "description": "no such report, or no such account (admin tokens only)"},
}


async def _download(name: str, info: AccountInfo | None, period: TimeRange, fmt: str,
                    queries: LedgerQueries) -> StreamingResponse:
    if name not in REPORTS:
        raise HTTPException(404, f"no report {name!r}; one of {', '.join(REPORTS)}")
    account = info.id if info is not None else None
    try:
        report = await run_in_threadpool(build_report, name, ClickHouseSource(queries), account=account,
                                         from_ms=period.from_ms, to_ms=period.to_ms, info=info)
    except (LedgerError, RatingError):
        raise                               # ValueErrors with a status of their own (api/main.py)
    except ValueError as exc:               # build_report's refusal of its arguments
        raise HTTPException(422, str(exc)) from None
    filename = f"{name}-{(account or 'all').replace('@', '_at_')}.{fmt}"
    return StreamingResponse(report_bytes(report, fmt), media_type=CONTENT_TYPES[fmt],
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/accounts/{account}/reports/{report}", response_class=StreamingResponse, responses=FILE_RESPONSES,
            summary="statement | destinations | gateways | invoice of one account, as a file")
async def account_report(info: ReadableAccount, queries: LedgerQueriesDep, period: ReportPeriod,
                         report: Annotated[str, Path(description=" | ".join(REPORTS))],
                         fmt: Format = "csv") -> StreamingResponse:
    return await _download(report, info, period, fmt, queries)


@router.get("/reports/{report}", response_class=StreamingResponse, responses=FILE_RESPONSES,
            summary="destinations | gateways over all accounts (admin)")
async def all_report(_: Admin, queries: LedgerQueriesDep, period: ReportPeriod,
                     report: Literal["destinations", "gateways"], fmt: Format = "csv") -> StreamingResponse:
    return await _download(report, None, period, fmt, queries)
