"""``sipledger trace CALL-ID``: a call's captured SIP messages as a ladder, and
``--pcap FILE`` to open them in Wireshark or sngrep (docs/trace.md).

Read from the running API (``--token``, an admin token or the call's account
token; the API owns the chdb store while ``up`` runs), or straight from the
store when ``up`` is stopped or ClickHouse is a server.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import msgspec
import typer

from proxy.contract.trace import TraceRecord
from proxy.trace import ladder

STYLE = {"1": "yellow", "2": "green", "3": "cyan", "4": "red", "5": "red", "6": "red"}


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _from_api(api: str, token: str, call_id: str) -> list[TraceRecord]:
    import httpx
    try:
        response = httpx.get(f"{api.rstrip('/')}/v1/calls/{quote(call_id, safe='')}/trace",
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"API {api}: {exc}")
    if response.status_code == 404:
        return []
    if response.status_code != 200:
        _fail(f"API {api}: {response.status_code} {response.text[:300]}")
    records = []
    for m in response.json()["messages"]:
        (src_ip, _, src_port), (dst_ip, _, dst_port) = m["src"].rpartition(":"), m["dst"].rpartition(":")
        records.append(TraceRecord(id=m["id"], ts_ms=m["ts_ms"], direction=m["direction"],
                                   transport=m["transport"], src_ip=src_ip, src_port=int(src_port),
                                   dst_ip=dst_ip, dst_port=int(dst_port), call_id=call_id, cseq=m["cseq"],
                                   method=m["method"], status=m["status"], raw=m["raw"]))
    return records


def _from_store(ctx: typer.Context, call_id: str) -> list[TraceRecord]:
    from cdr.store.trace import TraceStore
    from proxy.infra.clickhouse.backend import BackendError, open_backend
    obj = ctx.obj
    try:
        backend = open_backend(obj.config.clickhouse, obj.data_dir)
    except BackendError as exc:
        api = obj.config.api
        _fail(f"trace store: {str(exc).splitlines()[0]}\n  while `up` runs, read through the API: "
              f"--token TOKEN (--api http://{api.host}:{api.port})")
    try:
        return TraceStore(backend).call(call_id)
    except BackendError as exc:
        _fail(str(exc).splitlines()[0])
    finally:
        backend.close()
    return []


def trace(ctx: typer.Context,
          call_id: str = typer.Argument(..., help="The call's Call-ID."),
          pcap_file: Path = typer.Option(None, "--pcap", help="Also write the messages to this pcap file."),
          token: str = typer.Option(None, "--token", envvar="SIPLEDGER_TOKEN",
                                    help="Read through the running API with this token."),
          api: str = typer.Option(None, "--api", help="API base URL (default from [api])."),
          raw: bool = typer.Option(False, "--raw", help="Print every message in full after the ladder."),
          as_json: bool = typer.Option(False, "--json", help="Print the messages as JSON lines.")) -> None:
    """Print a call's SIP ladder (arrows between parties, times, methods and codes)."""
    if token:
        settings = ctx.obj.config.api
        records = _from_api(api or f"http://{settings.host}:{settings.port}", token, call_id)
    else:
        records = _from_store(ctx, call_id)
    if not records:
        _fail(f"no trace for Call-ID {call_id!r} ([trace] enabled, or ctx.trace() in the routing script)")
    if as_json:
        for r in records:
            typer.echo(msgspec.json.encode(r).decode())
    else:
        _print(records, raw)
    if pcap_file is not None:
        from .routes.trace import pcap_bytes
        pcap_file.write_bytes(pcap_bytes(records))
        typer.echo(f"wrote {len(records)} messages to {pcap_file}", err=True)


def _print(records: list[TraceRecord], raw: bool) -> None:
    from rich.console import Console
    from rich.text import Text
    console = Console(highlight=False, soft_wrap=True)
    ordered = sorted(records, key=lambda r: (r.ts_ms, r.id))
    lines = ladder.render(ordered)
    console.print(Text(lines[0], style="bold"))
    for r, line in zip(ordered, lines[1:]):
        console.print(Text(line, style=STYLE.get(str(r.status)[0], "red") if r.status else "cyan"))
    if raw:
        for r in ordered:
            console.print(Text(f"\n--- {r.direction} {r.src_ip}:{r.src_port} -> {r.dst_ip}:{r.dst_port} "
                               f"({r.transport}) {r.ts_ms}", style="bold"))
            console.print(Text(r.raw.rstrip("\r\n")))
