"""``sipledger account ...``: billing accounts, top-ups, adjustments, balances.

Account changes and money go through the billing service when it runs, else
straight to the ledger under its lock -- the same money commands either way
(billing/client.py, billing/application.py).  Listings read the durable
ledger (SQL).
"""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from billing.ledger.accounts import account_dict
from billing.ledger.events import event_dict
from billing.ledger.fold import fold
from billing.money import money_text

from .common import (
    billing_settings,
    bound,
    check_limit,
    client,
    console,
    invoke,
    ledger_store,
    time_text,
    usage,
)

__all__ = ["account_app"]

account_app = typer.Typer(help="Billing accounts: prepaid / postpaid, top-ups, balances.",
                          no_args_is_help=True)


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
        usage("--prepaid or --postpaid, not both")
    kind = "postpaid" if postpaid or (credit_limit is not None and not prepaid) else "prepaid"
    fields = {"kind": kind, "currency": currency or billing_settings(ctx).currency, "name": name,
              "status": "blocked" if blocked else "active"}
    if credit_limit is not None:
        fields["credit_limit"] = credit_limit
    info = invoke(client(ctx).put_account, account, fields, create=True)
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
        usage("nothing to change")
    info = invoke(client(ctx).put_account, account, fields, create=False)
    typer.echo(f"account {info['id']}: {info['kind']} {info['currency']} {info['status']} "
               f"credit limit {info['credit_limit']}")


@account_app.command("block")
def account_block(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID")) -> None:
    """Block an account: new calls are refused, live calls torn down."""
    invoke(client(ctx).put_account, account, {"status": "blocked"}, create=False)
    typer.echo(f"account {account} blocked")


@account_app.command("unblock")
def account_unblock(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID")) -> None:
    """Make a blocked account active again."""
    invoke(client(ctx).put_account, account, {"status": "active"}, create=False)
    typer.echo(f"account {account} active")


@account_app.command("delete")
def account_delete(ctx: typer.Context, account: str = typer.Argument(..., metavar="ID")) -> None:
    """Delete an account that has no ledger events (otherwise block it)."""
    invoke(client(ctx).delete_account, account)
    typer.echo(f"account {account} deleted")


def _money(ctx, kind: str, account: str, amount: str, key: str | None, note: str) -> None:
    if not key:
        usage("--key is required: the same key never applies twice (a retry is safe)")
    result = invoke(client(ctx).money, account, kind, amount, key, note)
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
                 at: Optional[str] = typer.Option(None, "--at", help="As it was then (ISO date/time or epoch ms): "
                                                  "folded from the ledger events booked until then."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Balance (live when the billing service runs), active calls, recent ledger events."""
    check_limit(last, "--last")
    if at is not None:
        _show_at(ctx, account, bound(at, "--at"), last, as_json)
        return
    snap = invoke(client(ctx).balance, account)
    with ledger_store(ctx) as store:
        events = store.events(account=account, limit=last, descending=True)
    if as_json:
        typer.echo(json.dumps({**snap, "events": [event_dict(e) for e in events]}, indent=2))
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
            table.add_row(str(e.seq), time_text(e.ts_ms), e.kind, money_text(e.amount),
                          e.key or (f"{e.cdr_id}/{e.leg}" if e.cdr_id else e.call_id))
        console().print(table)


def _show_at(ctx: typer.Context, account: str, at_ms: int | None, last: int, as_json: bool) -> None:
    """``account show --at``: a read of the durable ledger (no lock: history does not move)."""
    import asyncio

    from billing.application import BillingApplication, StoredLedger
    assert at_ms is not None
    with ledger_store(ctx) as store:
        snap = invoke(asyncio.run, BillingApplication(StoredLedger(store)).balance_at(account, at_ms, last=last))
    if as_json:
        typer.echo(json.dumps(snap, indent=2))
        return
    typer.echo(f"account {account} at {time_text(at_ms)} UTC: balance {snap['balance']}  "
               f"reserved {snap['reserved']}  available {snap['available']}")
    for call in snap["active_calls"]:
        typer.echo(f"  live call {call['call_id']} to {call['number']}: paid {call['paid_ms'] // 1000} s, "
                   f"reserved {call['reserved']}")
    if snap["events"]:
        table = Table("seq", "time", "kind", "amount", "reference")
        for e in snap["events"]:
            table.add_row(str(e["seq"]), time_text(e["ts_ms"]), e["kind"], e["amount"],
                          e["key"] or (f"{e['cdr_id']}/{e['leg']}" if e["cdr_id"] else e["call_id"]))
        console().print(table)


@account_app.command("list")
def account_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Accounts with their ledger balances."""
    with ledger_store(ctx) as store:
        accounts = store.list_accounts()
        state = fold(store.iter_events())
    if as_json:
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
    console().print(table)
