"""``sipledger account ...``, ``sipledger ledger ...`` and ``sipledger report ...``.

The main CLI mounts ``account_app``, ``ledger_app`` and ``report_app`` and sets
``ctx.obj`` (``.data_dir``, ``.config``).  Account changes and money go
through the billing service when it runs (billing/client.py), else straight
to the ledger under its lock.  Reports read the durable ledger (SQLite).
``ledger check`` reads the CDRs from ClickHouse: directly when no API process
holds the embedded store, else through the API (``--api``/``--token``, or
SIPLEDGER_API_URL / SIPLEDGER_API_TOKEN).
"""
from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from billing.client import BillingClient
from billing.errors import LedgerError
from billing.ledger.fold import fold
from billing.ledger.store import LedgerStore
from billing.money import money_text
from proxy.infra.config import BillingSettings, LedgerSettings

__all__ = ["account_app", "ledger_app", "report_app", "parse_when"]

account_app = typer.Typer(help="Billing accounts: prepaid / postpaid, top-ups, balances.",
                          no_args_is_help=True)
ledger_app = typer.Typer(help="The money ledger: history and reconciliation with the CDRs.",
                         no_args_is_help=True)
report_app = typer.Typer(help="Billing reports as CSV, Parquet or XLSX (exact money).",
                         no_args_is_help=True)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _billing(ctx: typer.Context) -> BillingSettings:
    return getattr(getattr(ctx.obj, "config", None), "billing", None) or BillingSettings()


def _ledger_settings(ctx: typer.Context) -> LedgerSettings:
    return getattr(getattr(ctx.obj, "config", None), "ledger", None) or LedgerSettings()


def _data_dir(ctx: typer.Context) -> Path:
    data_dir = getattr(ctx.obj, "data_dir", None)
    if data_dir is None:
        _fail("no data dir")
    return Path(data_dir)


def _client(ctx: typer.Context) -> BillingClient:
    return BillingClient(_data_dir(ctx), _billing(ctx))


@contextmanager
def _store(ctx: typer.Context) -> Iterator[LedgerStore]:
    store = None
    try:
        store = LedgerStore(_billing(ctx).database_url(_data_dir(ctx)))
        store.create_schema()
        yield store
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        if store is not None:
            store.close()


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except LedgerError as exc:
        _fail(str(exc))


def parse_when(text: str | None, what: str, *, end: bool = False) -> int | None:
    """ISO date (``2026-11`` = the month, ``2026-11-28`` = the day, UTC) or date-time
    (UTC when no offset) or epoch ms -> epoch ms.  ``end``: a month/day means its end."""
    if text is None or text == "":
        return None
    raw = text.strip()
    if re.fullmatch(r"\d{10,16}", raw):
        return int(raw)
    month = re.fullmatch(r"(\d{4})-(\d{2})", raw)
    if month:
        year, mon = int(month[1]), int(month[2])
        if end:
            year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
        try:
            return int(datetime(year, mon, 1, tzinfo=timezone.utc).timestamp() * 1000)
        except ValueError:
            raise typer.BadParameter(f"{what}: {raw!r} is not a month") from None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{what}: {raw!r} is not an ISO date/time or epoch ms") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    ms = int(moment.timestamp() * 1000)
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        ms += 86_400_000
    return ms


def _console() -> Console:
    return Console(soft_wrap=True)


# -- account ---------------------------------------------------------------------------------

@account_app.command("add")
def account_add(
    ctx: typer.Context,
    account: str = typer.Argument(..., metavar="ID", help="user@domain, as the proxy authenticates it."),
    prepaid: bool = typer.Option(False, "--prepaid", help="Prepaid: calls only while the balance covers them."),
    postpaid: bool = typer.Option(False, "--postpaid", help="Postpaid: credit limit, monthly invoice."),
    currency: Optional[str] = typer.Option(None, "--currency", help="ISO 4217 (default [billing] currency)."),
    credit_limit: Optional[str] = typer.Option(None, "--credit-limit", help="Postpaid: how far below 0 it may go."),
    name: str = typer.Option("", "--name", help="A display name."),
    blocked: bool = typer.Option(False, "--blocked", help="Create it blocked."),
) -> None:
    """Create a billing account."""
    if prepaid and postpaid:
        _fail("--prepaid or --postpaid, not both", 2)
    kind = "postpaid" if postpaid or (credit_limit is not None and not prepaid) else "prepaid"
    fields = {"kind": kind, "currency": currency or _billing(ctx).currency, "name": name,
              "status": "blocked" if blocked else "active"}
    if credit_limit is not None:
        fields["credit_limit"] = credit_limit
    info = _call(_client(ctx).put_account, account, fields, create=True)
    limit = f" credit limit {info['credit_limit']}" if info["kind"] == "postpaid" else ""
    typer.echo(f"account {info['id']}: {info['kind']} {info['currency']} {info['status']}{limit}")


@account_app.command("set")
def account_set(
    ctx: typer.Context,
    account: str = typer.Argument(..., metavar="ID"),
    status: Optional[str] = typer.Option(None, "--status", help="active or blocked (blocking tears calls down)."),
    credit_limit: Optional[str] = typer.Option(None, "--credit-limit"),
    kind: Optional[str] = typer.Option(None, "--kind", help="prepaid or postpaid."),
    name: Optional[str] = typer.Option(None, "--name"),
) -> None:
    """Change an account's status, credit limit, kind or name."""
    fields = {k: v for k, v in {"status": status, "credit_limit": credit_limit, "kind": kind,
                                "name": name}.items() if v is not None}
    if not fields:
        _fail("nothing to change", 2)
    info = _call(_client(ctx).put_account, account, fields, create=False)
    typer.echo(f"account {info['id']}: {info['kind']} {info['currency']} {info['status']} "
               f"credit limit {info['credit_limit']}")


@account_app.command("block")
def account_block(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID")) -> None:
    """Block an account: new calls are refused, live calls torn down."""
    _call(_client(ctx).put_account, account, {"status": "blocked"}, create=False)
    typer.echo(f"account {account} blocked")


@account_app.command("unblock")
def account_unblock(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID")) -> None:
    """Make a blocked account active again."""
    _call(_client(ctx).put_account, account, {"status": "active"}, create=False)
    typer.echo(f"account {account} active")


@account_app.command("delete")
def account_delete(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID")) -> None:
    """Delete an account that has no ledger events (otherwise block it)."""
    _call(_client(ctx).delete_account, account)
    typer.echo(f"account {account} deleted")


def _money(ctx, kind: str, account: str, amount: str, key: str | None, note: str) -> None:
    if not key:
        _fail("--key is required: the same key never applies twice (a retry is safe)", 2)
    result = _call(_client(ctx).money, account, kind, amount, key, note)
    event = result["event"]
    again = " (already applied: nothing changed)" if result.get("replayed") else ""
    typer.echo(f"{event['kind']} {event['amount']} {event['currency']} on {account}{again}: "
               f"balance {result['balance']}, available {result['available']}")


@account_app.command("topup")
def account_topup(
    ctx: typer.Context,
    account: str = typer.Argument(..., metavar="ID"),
    amount: str = typer.Argument(..., metavar="AMOUNT", help="Plain decimal, e.g. 10 or 12.50."),
    key: Optional[str] = typer.Option(None, "--key", metavar="IDEMPOTENCY_KEY",
                                      help="Unique per top-up (e.g. the payment id); required."),
    note: str = typer.Option("", "--note"),
) -> None:
    """Add credit, exactly once per --key."""
    _money(ctx, "topup", account, amount, key, note)


@account_app.command("adjust", context_settings={"ignore_unknown_options": True})
def account_adjust(
    ctx: typer.Context,
    account: str = typer.Argument(..., metavar="ID"),
    amount: str = typer.Argument(..., metavar="AMOUNT", help="Signed decimal: -2.50 takes credit away."),
    key: Optional[str] = typer.Option(None, "--key", metavar="IDEMPOTENCY_KEY"),
    note: str = typer.Option("", "--note"),
    refund: bool = typer.Option(False, "--refund", help="A refund (amount > 0) instead of an adjustment."),
) -> None:
    """Correct a balance (adjustment) or refund a charge, exactly once per --key."""
    _money(ctx, "refund" if refund else "adjustment", account, amount, key, note)


@account_app.command("show")
def account_show(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID"),
                 last: int = typer.Option(10, "--last", help="How many recent ledger events to list."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Balance (live when the billing service runs), active calls, recent ledger events."""
    snap = _call(_client(ctx).balance, account)
    with _store(ctx) as store:
        events = store.events(account=account, limit=last, descending=True)
    if as_json:
        typer.echo(json.dumps({**snap, "events": [_event_json(e) for e in events]}, indent=2))
        return
    typer.echo(f"account {account}: {snap['kind']} {snap['currency']} {snap['status']}"
               + (f", credit limit {snap['credit_limit']}" if snap["kind"] == "postpaid" else ""))
    typer.echo(f"balance {snap['balance']}  reserved {snap['reserved']}  held {snap['held']}  "
               f"available {snap['available']}" + ("" if snap.get("live") else "  (billing service not running)"))
    for call in snap.get("active_calls", []):
        typer.echo(f"  live call {call['call_id']} to {call['number']}: paid {call['paid_ms'] // 1000} s, "
                   f"reserved {call['reserved']}" + (" (credit exhausted)" if call["exhausted"] else ""))
    if events:
        table = Table("seq", "time", "kind", "amount", "reference")
        for e in events:
            table.add_row(str(e.seq), _time(e.ts_ms), e.kind, money_text(e.amount),
                          e.key or (f"{e.cdr_id}/{e.leg}" if e.cdr_id else e.call_id))
        _console().print(table)


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _event_json(e) -> dict:
    from billing.ledger.events import event_dict
    return event_dict(e)


@account_app.command("list")
def account_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Accounts with their ledger balances."""
    with _store(ctx) as store:
        accounts = store.list_accounts()
        state = fold(store.iter_events())
    if as_json:
        from billing.ledger.accounts import account_dict
        rows = []
        for a in accounts:
            book = state.books.get(a.id)
            rows.append(dict(account_dict(a), balance=money_text(book.balance) if book else "0",
                             reserved=money_text(book.reserved) if book else "0"))
        typer.echo(json.dumps(rows, indent=2))
        return
    if not accounts:
        typer.echo("no accounts")
        return
    table = Table("account", "kind", "currency", "status", "credit limit", "balance", "reserved", "events")
    for a in accounts:
        book = state.books.get(a.id)
        table.add_row(a.id, a.kind, a.currency, a.status,
                      money_text(a.credit_limit) if a.kind == "postpaid" else "",
                      money_text(book.balance) if book else "0", money_text(book.reserved) if book else "0",
                      str(book.events if book else 0))
    _console().print(table)


# -- ledger ------------------------------------------------------------------------------------

@ledger_app.command("history")
def ledger_history(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID"),
                   limit: int = typer.Option(50, "--limit"),
                   kinds: Optional[list[str]] = typer.Option(None, "--kind", help="Only this kind (repeatable)."),
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """An account's ledger events, newest first, from the durable ledger."""
    with _store(ctx) as store:
        events = store.events(account=account, limit=limit, descending=True, kinds=kinds or None)
    if as_json:
        typer.echo(json.dumps([_event_json(e) for e in events], indent=2))
        return
    table = Table("seq", "time", "kind", "amount", "call / cdr", "key", "note")
    for e in events:
        table.add_row(str(e.seq), _time(e.ts_ms), e.kind + (" (final)" if e.final else ""),
                      money_text(e.amount), f"{e.cdr_id}/{e.leg}" if e.cdr_id else e.call_id, e.key, e.note)
    _console().print(table)


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
    from_ms, to_ms = parse_when(from_, "--from"), parse_when(to, "--to", end=True)
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
        _console().print(table)
        if data["differences"]:
            diff = Table("kind", "account", "month", "cdr_id", "leg", "rated", "debited", "detail")
            for d in data["differences"]:
                diff.add_row(d["kind"], d["account"], d["period"], d["cdr_id"], str(d["leg"]), d["rated"],
                             d["debited"], d["detail"])
            _console().print(diff)
    typer.echo(("OK: debits equal rated CDR costs" if data["ok"] else
                f"DIFFERENCES: {len(data['differences'])}"), err=True)
    raise typer.Exit(0 if data["ok"] else 1)


def _check_direct(ctx, from_ms, to_ms, account, token) -> dict:
    from billing.ledger.check import run_check
    from billing.rating.store import RatesStore
    from proxy.infra.clickhouse.backend import BackendError, open_backend

    config = getattr(ctx.obj, "config", None)
    try:
        backend = open_backend(config.clickhouse, _data_dir(ctx))
    except BackendError as exc:
        message = str(exc).splitlines()[0]
        if "another process" in message:
            port = getattr(getattr(config, "api", None), "port", 8080)
            if token:
                return _check_through_api(f"http://127.0.0.1:{port}", token, from_ms, to_ms, account)
            _fail(f"{message}\n  run the check through the API: --api http://127.0.0.1:{port} --token ADMIN_TOKEN")
        _fail(f"CDR store: {message}")
    settings = _billing(ctx)
    url = settings.database_url(_data_dir(ctx))
    try:
        with LedgerStore(url) as store, RatesStore(url) as rates:
            store.create_schema()
            rates.create_schema()
            return run_check(backend, store, rates, from_ms=from_ms, to_ms=to_ms, account=account,
                             default_plan=settings.default_plan).to_dict()
    except (LedgerError, BackendError) as exc:
        _fail(str(exc).splitlines()[0])
    finally:
        backend.close()


def _check_through_api(api: str, token: str | None, from_ms, to_ms, account) -> dict:
    import httpx
    if not token:
        _fail("--api needs --token (an admin token: sipledger token create --role admin)", 2)
    params = {k: v for k, v in {"from": from_ms, "to": to_ms, "account": account}.items() if v is not None}
    try:
        response = httpx.get(f"{api.rstrip('/')}/v1/ledger/check", params=params,
                             headers={"Authorization": f"Bearer {token}"}, timeout=300)
    except httpx.HTTPError as exc:
        _fail(f"API {api}: {exc}")
    if response.status_code != 200:
        _fail(f"API {api}: {response.status_code} {response.text[:300]}")
    return response.json()


# -- reports ------------------------------------------------------------------------------------

def _report(ctx: typer.Context, name: str, account: str | None, from_: str | None, to: str | None,
            month: str | None, fmt: str, output: Path) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from billing.reports.build import build_report
    from billing.reports.export import FORMATS, write_report
    from billing.reports.sources import SqliteSource

    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    if month:
        if from_ or to:
            _fail("--month or --from/--to, not both", 2)
        from_, to = month, month
    from_ms, to_ms = parse_when(from_, "--from"), parse_when(to, "--to", end=True)
    with _store(ctx) as store:
        info = store.get_account(account) if account else None
        if account and info is None:
            _fail(f"account {account} does not exist")
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=Console(stderr=True), transient=True,
                      disable=not sys.stderr.isatty() and not os.environ.get("SIPLEDGER_PROGRESS")) as bar:
            reading = bar.add_task("reading ledger", total=None)

            def read_progress(done: int, total: int | None) -> None:
                bar.update(reading, completed=done)

            try:
                report = build_report(name, SqliteSource(store), account=account, from_ms=from_ms,
                                      to_ms=to_ms, info=info, progress=read_progress)
            except ValueError as exc:
                _fail(str(exc), 2)
            bar.update(reading, total=bar.tasks[reading].completed)
            writing = bar.add_task(f"writing {fmt}", total=len(report.frame))

            def write_progress(done: int, total: int | None) -> None:
                bar.update(writing, completed=done, total=total)

            try:
                rows = write_report(report, output, fmt, progress=write_progress)
            except OSError as exc:
                _fail(f"{output}: {exc.strerror or exc}")
    summary = ", ".join(f"{k} {v}" for k, v in report.meta.items() if k not in ("from", "to"))
    typer.echo(f"{name}: {rows} row(s) -> {output} ({summary})")


def _report_command(name: str, doc: str, account_required: bool):
    def command(
        ctx: typer.Context,
        account: Optional[str] = typer.Option(None, "--account", help="user@domain" +
                                              (" (required)" if account_required else " (default: all)")),
        from_: Optional[str] = typer.Option(None, "--from", help="ISO date/time, YYYY-MM or epoch ms."),
        to: Optional[str] = typer.Option(None, "--to", help="Exclusive end (a date or month means its end)."),
        month: Optional[str] = typer.Option(None, "--month", help="YYYY-MM: the whole month (UTC)."),
        fmt: str = typer.Option("csv", "--format", help="csv, parquet or xlsx."),
        output: Path = typer.Option(..., "--output", "-o", help="File to write."),
    ) -> None:
        if account_required and not account:
            _fail(f"report {name} needs --account", 2)
        _report(ctx, name, account, from_, to, month, fmt, output)
    command.__doc__ = doc
    return command


report_app.command("statement")(_report_command(
    "statement", "An account's statement: opening balance, every top-up, debit and adjustment, "
                 "running balance, closing balance.", True))
report_app.command("destinations")(_report_command(
    "destinations", "Calls, minutes and cost per destination (rate prefix and name).", False))
report_app.command("gateways")(_report_command(
    "gateways", "Calls, minutes and cost per gateway.", False))
report_app.command("invoice")(_report_command(
    "invoice", "Invoice data (use --month for postpaid monthly invoices): charges per "
               "destination, credits, balances, amount due.", True))


def new_key() -> str:
    return uuid.uuid4().hex
