"""``/v1/calls/{call_id}/trace``: a call's captured SIP messages (docs/trace.md),
as JSON with the ladder, or as a pcap (``?format=pcap``).  Admin tokens read
every call; an account token only calls whose CDR is its own (any other is
404, like an unknown Call-ID: Call-IDs do not leak)."""
from __future__ import annotations

import io
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cdr.store.queries import CdrStore
from cdr.store.trace import TraceStore
from proxy.contract.trace import TraceRecord
from proxy.infra.clickhouse.backend import BackendError
from proxy.trace import ladder, pcap

from ..deps import CdrStoreDep, Principal
from ..schemas import CallTrace, Problem

router = APIRouter(prefix="/calls", tags=["trace"])

PCAP_TYPE = "application/vnd.tcpdump.pcap"


def trace_url(call_id: str) -> str:
    """Where a call's trace is (the CDR detail links to it)."""
    return f"/v1/calls/{quote(call_id, safe='')}/trace"


def linked_trace(store: CdrStore, call_id: str) -> str | None:
    """The CDR detail's ``trace_url``: set when the call has captured messages."""
    try:
        return trace_url(call_id) if call_id and TraceStore(store.backend).has([call_id]) else None
    except BackendError:                # no sip_trace table yet (a store not migrated to 4)
        return None


def pcap_bytes(records: list[TraceRecord]) -> bytes:
    out = io.BytesIO()
    pcap.write(out, ((r.ts_ms * 1000, r.raw.encode(), (r.src_ip, r.src_port), (r.dst_ip, r.dst_port))
                     for r in records))
    return out.getvalue()


def _read(store: TraceStore, call_id: str, account: str | None) -> list[TraceRecord]:
    if account is not None and account not in store.accounts_of(call_id):
        return []
    return store.call(call_id)


@router.get("/{call_id}/trace", response_model=CallTrace, summary="A call's captured SIP messages and their ladder",
            responses={404: {"model": Problem, "description": "no trace for this Call-ID (or not the token's)"},
                       200: {"content": {PCAP_TYPE: {}}, "description": "JSON, or a pcap with format=pcap"}})
async def get_trace(who: Principal, store: CdrStoreDep,
                    call_id: Annotated[str, Path(min_length=1, max_length=256, description="the Call-ID")],
                    format: Annotated[Literal["json", "pcap"], Query(description="json or pcap")] = "json",
                    ) -> Any:   # a dict (CallTrace) or the pcap Response
    records = await run_in_threadpool(_read, TraceStore(store.backend), call_id,
                                      None if who.is_admin else who.account)
    if not records:
        raise HTTPException(404, "no trace for this Call-ID")
    if format == "pcap":
        return Response(pcap_bytes(records), media_type=PCAP_TYPE,
                        headers={"Content-Disposition": 'attachment; filename="trace.pcap"'})
    return {"call_id": call_id, "messages": [_message(r) for r in records], "ladder": ladder.render(records)}


def _message(r: TraceRecord) -> dict[str, Any]:
    return {"id": r.id, "ts_ms": r.ts_ms, "direction": r.direction, "transport": r.transport,
            "src": f"{r.src_ip}:{r.src_port}", "dst": f"{r.dst_ip}:{r.dst_port}", "method": r.method,
            "status": r.status, "cseq": r.cseq, "raw": r.raw}
