"""``sipledger report ...``: billing reports from the durable ledger, as CSV, Parquet or XLSX.

The same report code and exports as the REST downloads (billing/reports/),
read from the SQL ledger here.  Periods: ``--from``/``--to`` (a date or month
as ``--to`` means its end) or ``--month``; an inverted range is refused.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import fail, ledger_store, period, usage

__all__ = ["report_app"]

report_app = typer.Typer(help="Billing reports as CSV, Parquet or XLSX (exact money).",
                         no_args_is_help=True)


def _report(ctx: typer.Context, name: str, account: str | None, from_: str | None, to: str | None,
            month: str | None, fmt: str, output: Path) -> None:
    # pandas and pyarrow take 0.3 s to import: only the report commands pay for them
    from billing.reports.build import build_report
    from billing.reports.export import FORMATS, write_report
    from billing.reports.sources import SqliteSource

    if fmt not in FORMATS:
        usage(f"--format must be one of {', '.join(FORMATS)}")
    from_ms, to_ms = period(from_, to, month)
    with ledger_store(ctx) as store:
        info = store.get_account(account) if account else None
        if account and info is None:
            fail(f"account {account} does not exist")
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
                usage(str(exc))
            bar.update(reading, total=bar.tasks[reading].completed)
            writing = bar.add_task(f"writing {fmt}", total=len(report.frame))

            def write_progress(done: int, total: int | None) -> None:
                bar.update(writing, completed=done, total=total)

            try:
                rows = write_report(report, output, fmt, progress=write_progress)
            except OSError as exc:
                fail(f"{output}: {exc.strerror or exc}")
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
            usage(f"report {name} needs --account")
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
