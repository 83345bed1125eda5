"""``sipledger rerate ...``: price a period's calls again and book the differences (docs/rerating.md).

``sipledger rerate --from T1 --to T2 [--account A] [--plan P] [--dry-run]``
runs the money command of billing/application.py through the billing
service when it runs, else on the SQL ledger under its lock (billing/client.py),
like ``account topup``.  ``rerate list`` / ``rerate show RUN`` read the run
records from the billing database; ``show --format`` exports a run's
per-account deltas with the report exports (billing/reports/export.py).
"""
from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from billing.ledger.events import event_dict
from billing.money import money_text
from billing.reports import FORMATS

from .common import check_limit, client, console, fail, invoke, ledger_store, period, time_text, usage

__all__ = ["rerate_app"]

rerate_app = typer.Typer(help="Rerate a period's calls with the rates valid at each call's time "
                              "(compensating ledger events); list and show runs.")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print_run(run: dict) -> None:
    dry = " (dry run: nothing booked)" if run.get("dry_run") else ""
    typer.echo(f"rerate {run['id'] or '-'}{dry}: {time_text(run['from_ms'])} .. {time_text(run['to_ms'])}"
               + (f", account {run['account']}" if run["account"] else "")
               + (f", plan {run['plan']}" if run["plan"] else "")
               + (f", by {run['who']}" if run.get("who") else ""))
    typer.echo(f"calls {run['calls']}  changed {run['changed']}  unrated {run['unrated']}  "
               f"before {run['total_before']}  after {run['total_after']}  delta {run['delta']}")
    if run["accounts"]:
        table = Table("account", "currency", "calls", "changed", "unrated", "before", "after", "delta")
        for a in run["accounts"]:
            table.add_row(a["account"], a["currency"], str(a["calls"]), str(a["changed"]), str(a["unrated"]),
                          a["before"], a["after"], a["delta"])
        console().print(table)


@rerate_app.callback(invoke_without_command=True)
def rerate(
    ctx: typer.Context,
    from_: Optional[str] = typer.Option(None, "--from", help="ISO date/time, YYYY-MM or epoch ms (answer time)."),
    to: Optional[str] = typer.Option(None, "--to", help="Exclusive end (a date or month means its end)."),
    account: str = typer.Option("", "--account", help="Only this account."),
    plan: str = typer.Option("", "--plan", help="Price with this plan instead of each account's own."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; book nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Price the calls answered in [--from, --to) again; book a correction for each whose cost changed."""
    if ctx.invoked_subcommand is not None:
        if from_ or to or account or plan or dry_run:
            usage("rerate options go without a subcommand: sipledger rerate --from T1 --to T2 ...")
        return
    if not from_ or not to:
        usage("rerate needs --from and --to (the calls' answer time)")
    from_ms, to_ms = period(from_, to)
    assert from_ms is not None and to_ms is not None
    run = invoke(client(ctx).rerate, from_ms, to_ms, account=account, plan=plan, dry_run=dry_run, who=_who())
    if as_json:
        typer.echo(json.dumps(run, indent=2))
        return
    _print_run(run)
    if dry_run and run["changes"]:
        table = Table("account", "cdr/leg", "answered", "number", "before", "after")
        for c in run["changes"]:
            table.add_row(c["account"], f"{c['cdr_id']}/{c['leg']}", time_text(c["answer_ms"]), c["number"],
                          c["before"], c["after"])
        console().print(table)
        if run["changed"] > len(run["changes"]):
            typer.echo(f"... and {run['changed'] - len(run['changes'])} more")


@rerate_app.command("list")
def rerate_list(ctx: typer.Context, limit: int = typer.Option(50, "--limit", help="How many runs, newest first."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Recorded rerate runs, newest first."""
    check_limit(limit, "--limit")
    with ledger_store(ctx) as store:
        runs = [r.to_dict() for r in store.runs(limit=limit)]
    if as_json:
        typer.echo(json.dumps(runs, indent=2))
        return
    if not runs:
        typer.echo("no rerate runs")
        return
    table = Table("run", "when", "who", "from", "to", "account", "plan", "calls", "changed", "delta")
    for r in runs:
        table.add_row(r["id"], time_text(r["created_ms"]), r["who"], time_text(r["from_ms"]),
                      time_text(r["to_ms"]), r["account"], r["plan"], str(r["calls"]), str(r["changed"]), r["delta"])
    console().print(table)


@rerate_app.command("show")
def rerate_show(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN"),
    fmt: Optional[str] = typer.Option(None, "--format", help="Export the per-account deltas: csv, parquet, xlsx."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (with --format)."),
    calls: bool = typer.Option(False, "--calls", help="Also list the run's corrections (first 1000)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One run: its filters, totals and per-account deltas (or an export of them)."""
    if (fmt is None) != (output is None):
        usage("--format and --output go together")
    if fmt is not None and fmt not in FORMATS:
        usage(f"--format must be one of {', '.join(FORMATS)}")
    with ledger_store(ctx) as store:
        found = store.get_run(run_id)
        corrections = store.run_events(run_id) if calls else []
    if found is None:
        fail(f"rerate run {run_id} does not exist")
    run = found.to_dict()
    if calls:
        run["corrections"] = [event_dict(e) for e in corrections]
    if fmt is not None and output is not None:
        from billing.reports.build import rerate_report
        from billing.reports.export import write_report
        try:
            rows = write_report(rerate_report(run), output, fmt)
        except OSError as exc:
            fail(f"{output}: {exc.strerror or exc}")
        typer.echo(f"rerate {run_id}: {rows} account row(s) -> {output}")
        return
    if as_json:
        typer.echo(json.dumps(run, indent=2))
        return
    _print_run(run)
    if calls and corrections:
        table = Table("seq", "account", "cdr/leg", "answered", "amount", "change")
        for e in corrections:
            table.add_row(str(e.seq), e.account, f"{e.cdr_id}/{e.leg}", time_text(e.answer_ms),
                          money_text(e.amount), e.note)
        console().print(table)
