"""``sipledger ledger ...``: an account's ledger history, and ``ledger check``.

History reads the durable ledger (SQL), the source of truth.  ``ledger check``
(billing/ledger/check.py) needs the CDRs from ClickHouse: it opens the
embedded store directly when no API process holds it, else runs in the API
process (``--api``/``--token``, or SIPLEDGER_API_URL / SIPLEDGER_API_TOKEN).
"""
from __future__ import annotations

import json
from typing import Any, Optional

import typer
from rich.table import Table

from billing.errors import LedgerError
from billing.ledger.events import event_dict
from billing.ledger.store import LedgerStore
from billing.money import money_text
from proxy.contract.ledger import KINDS

from .common import (
    MAX_LIMIT,
    billing_settings,
    check_limit,
    console,
    data_dir,
    fail,
    ledger_store,
    period,
    time_text,
    usage,
)

__all__ = ["ledger_app"]

ledger_app = typer.Typer(help="The money ledger: history and reconciliation with the CDRs.",
                         no_args_is_help=True)


@ledger_app.command("history")
def ledger_history(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID"),
                   limit: int = typer.Option(50, "--limit", help=f"How many events (1-{MAX_LIMIT})."),
                   kinds: Optional[list[str]] = typer.Option(None, "--kind", help="Only this kind (repeatable)."),
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """An account's ledger events, newest first, from the durable ledger."""
    check_limit(limit, "--limit")
    for kind in kinds or ():
        if kind not in KINDS:
            usage(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    with ledger_store(ctx) as store:
        events = store.events(account=account, limit=limit, descending=True, kinds=kinds or None)
    if as_json:
        typer.echo(json.dumps([event_dict(e) for e in events], indent=2))
        return
    table = Table("seq", "time", "kind", "amount", "call / cdr", "key", "note")
    for e in events:
        table.add_row(str(e.seq), time_text(e.ts_ms), e.kind + (" (final)" if e.final else ""),
                      money_text(e.amount), f"{e.cdr_id}/{e.leg}" if e.cdr_id else e.call_id, e.key, e.note)
    console().print(table)


@ledger_app.command("check")
def ledger_check(
    ctx: typer.Context,
    from_: Optional[str] = typer.Option(None, "--from", help="ISO date/time, YYYY-MM or epoch ms (answer time)."),
    to: Optional[str] = typer.Option(None, "--to", help="Exclusive end (a date or month means its end)."),
    account: Optional[str] = typer.Option(None, "--account"),
    api: Optional[str] = typer.Option(None, "--api", envvar="SIPLEDGER_API_URL",
                                      help="Run the check in the API process (needed while it holds chdb)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="SIPLEDGER_API_TOKEN",
                                        help="Admin API token for --api."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Prove Σ debits = Σ rated CDR costs per account and month; list every difference (exit 1)."""
    from_ms, to_ms = period(from_, to)
    if api:
        data = _check_through_api(api, token, from_ms, to_ms, account)
    else:
        data = _check_direct(ctx, from_ms, to_ms, account, token)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        table = Table("account", "month", "currency", "CDR legs", "rated", "debits", "debited", "difference")
        for p in data["periods"]:
            table.add_row(p["account"], p["period"], p["currency"], str(p["cdr_legs"]), p["rated"],
                          str(p["debits"]), p["debited"], p["difference"])
        console().print(table)
        if data["differences"]:
            diff = Table("kind", "account", "month", "cdr_id", "leg", "rated", "debited", "detail")
            for d in data["differences"]:
                diff.add_row(d["kind"], d["account"], d["period"], d["cdr_id"], str(d["leg"]), d["rated"],
                             d["debited"], d["detail"])
            console().print(diff)
    skipped = data.get("skipped", [])
    if skipped and not as_json:
        typer.echo(f"not billable (answered before the account was created): {len(skipped)} CDR leg(s)")
    typer.echo(("OK: debits equal rated CDR costs" if data["ok"] else
                f"DIFFERENCES: {len(data['differences'])}"), err=True)
    raise typer.Exit(0 if data["ok"] else 1)


def _check_direct(ctx: typer.Context, from_ms: int | None, to_ms: int | None, account: str | None,
                  token: str | None) -> dict[str, Any]:
    from billing.ledger.check import run_check
    from billing.rating.store import RatesStore
    from proxy.infra.clickhouse.backend import BackendError, open_backend

    config = getattr(ctx.obj, "config", None)
    if config is None:
        fail("no configuration loaded: the CDR store's [clickhouse] settings are unknown")
    try:
        backend = open_backend(config.clickhouse, data_dir(ctx))
    except BackendError as exc:
        message = str(exc).splitlines()[0]
        if "another process" in message:
            port = getattr(getattr(config, "api", None), "port", 8080)
            if token:
                return _check_through_api(f"http://127.0.0.1:{port}", token, from_ms, to_ms, account)
            fail(f"{message}\n  run the check through the API: --api http://127.0.0.1:{port} --token ADMIN_TOKEN")
        fail(f"CDR store: {message}")
    settings = billing_settings(ctx)
    url = settings.database_url(data_dir(ctx))
    try:
        with LedgerStore(url) as store, RatesStore(url) as rates:
            store.create_schema()
            rates.create_schema()
            return run_check(backend, store, rates, from_ms=from_ms, to_ms=to_ms, account=account,
                             default_plan=settings.default_plan).to_dict()
    except (LedgerError, BackendError) as exc:
        fail(str(exc).splitlines()[0])
    finally:
        backend.close()


def _check_through_api(api: str, token: str | None, from_ms: int | None, to_ms: int | None,
                       account: str | None) -> dict[str, Any]:
    import httpx
    if not token:
        usage("--api needs --token (an admin token: sipledger token create --role admin)")
    params = {k: v for k, v in {"from": from_ms, "to": to_ms, "account": account}.items() if v is not None}
    try:
        response = httpx.get(f"{api.rstrip('/')}/v1/ledger/check", params=params,
                             headers={"Authorization": f"Bearer {token}"}, timeout=300)
    except httpx.HTTPError as exc:
        fail(f"API {api}: {exc}")
    if response.status_code != 200:
        fail(f"API {api}: {response.status_code} {response.text[:300]}")
    return response.json()
