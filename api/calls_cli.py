"""`sipledger calls` and `sipledger hangup`: the live calls of a running `up`.

Thin: the service is api/calls.py, the same one ``/v1/calls`` uses.
"""
from __future__ import annotations

import asyncio
import json

import typer
from rich.markup import escape

from proxy.infra.cli import fail, print_rows, usage

from .calls import DEFAULT_REASON, BrokerUnknown, CallNotFound, LiveCalls, LiveCallsUnavailable, check_call_id


def _service(ctx: typer.Context) -> LiveCalls:
    return LiveCalls(ctx.obj.data_dir, ctx.obj.config)


def _shown(text: object) -> str:
    """A field as the terminal shows it: what callers wrote may hold control
    characters or rich markup; neither reaches the operator's terminal."""
    return escape("".join(ch if ch.isprintable() else "?" for ch in str(text)))


def _clock(ms: int) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S") if ms else "-"


def calls(ctx: typer.Context,
          account: str = typer.Option(None, "--account", help="Only this account's calls (user@domain)."),
          as_json: bool = typer.Option(False, "--json", help="The list as JSON (the API's /v1/calls).")) -> None:
    """List the live calls of every running proxy worker (ringing ones as 'early')."""
    try:
        page = _service(ctx).list_calls(account)
    except LiveCallsUnavailable as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    if not page["workers"]:
        typer.echo("no running proxy worker has published its calls")
        return
    rows = [tuple(map(_shown, (c["call_id"], c["state"], c["caller"], c["callee"], c["account"] or "-",
                               c["gateway"] or "-", _clock(c["started_ms"]), _clock(c["answered_ms"]),
                               c["duration_ms"] // 1000, c["max_duration_s"], c["worker"])))
            for c in page["items"]]
    if rows:
        print_rows(("Call-ID", "state", "caller", "callee", "account", "gateway", "start (UTC)",
                    "answer", "duration (s)", "max (s)", "worker"), rows)
    typer.echo(f"{len(rows)} call(s) on {page['workers']} worker(s)"
               + (" (truncated: a worker lists at most 5000)" if page["truncated"] else ""))


def hangup(ctx: typer.Context, call_id: str = typer.Argument(..., help="The call's Call-ID."),
           reason: str = typer.Option(DEFAULT_REASON, "--reason", help="Text of the BYE's Reason header.")) -> None:
    """Hang up one live call: the proxy sends BYE both ways (a ringing call is cancelled)."""
    from aiokafka.errors import KafkaError
    try:
        check_call_id(call_id)
        done = asyncio.run(_service(ctx).hangup(call_id, reason, issued_by="cli"))
    except ValueError as exc:
        usage(str(exc))
    except CallNotFound as exc:
        fail(str(exc))
    except (BrokerUnknown, LiveCallsUnavailable, OSError, TimeoutError, KafkaError) as exc:
        fail(f"the hang-up was not sent: {exc}")
    typer.echo(f"teardown sent for {call_id} (command {done['command_id']})")
