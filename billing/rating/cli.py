"""``sipledger rates ...``: rate plans from the command line.

The main CLI mounts ``rates_app`` and sets ``ctx.obj`` (``.data_dir`` and
``.config``, whose ``billing`` section names the database).  Like the
provisioning commands, each command opens the store, creates missing tables,
does one thing and prints its result; errors go to stderr as one line with exit
status 1 -- except a rejected CSV import, which lists every bad line after it.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from proxy.infra import clock
from proxy.infra.cli import fail, opened, print_table
from proxy.infra.config import BillingSettings

from .csvfile import (
    CsvImportError,
    format_instant,
    format_time_of_day,
    format_weekdays,
    parse_decimal,
    parse_instant,
    plan_import,
    write_rates,
)
from .model import DAY, RatingError, check_timezone, max_duration, number_from_uri, rate_call, to_epoch_ms
from .store import RatesStore

__all__ = ["rates_app"]

rates_app = typer.Typer(help="Rate plans: CSV import/export, account assignment, test-rating a call.",
                        no_args_is_help=True)


def _settings(ctx: typer.Context) -> BillingSettings:
    return getattr(getattr(ctx.obj, "config", None), "billing", None) or BillingSettings()


def _store(ctx: typer.Context) -> AbstractContextManager[RatesStore]:
    data_dir = getattr(ctx.obj, "data_dir", None)
    settings = _settings(ctx)
    if data_dir is None and not settings.db_url:
        fail("no billing database configured")
    # database_url() needs the data dir only when db_url is empty (refused above without one)
    return opened(RatesStore, settings.db_url if data_dir is None else settings.database_url(data_dir))


@rates_app.command("import")
def rates_import(
    ctx: typer.Context,
    file: Path = typer.Argument(..., metavar="FILE", help="CSV file (see billing/rating/csvfile.py for the columns)."),
    plan: Optional[str] = typer.Option(None, "--plan", help="Plan for rows with an empty plan column."),
    replace: bool = typer.Option(False, "--replace",
                                 help="Replace all rates of the plans in the file (default: add to them)."),
    tz: Optional[str] = typer.Option(None, "--timezone", metavar="ZONE",
                                     help="Time zone of new (or, with --replace, replaced) plans."),
) -> None:
    """Import rates from CSV: all or nothing; a bad file lists every bad line."""
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"{file}: not UTF-8 text")
    settings = _settings(ctx)
    with _store(ctx) as store:
        version = store.version()
        try:
            result = plan_import(text, existing=store.get_plans(), plan=plan, replace=replace,
                                 currency=settings.currency, timezone=settings.timezone, set_timezone=tz)
        except CsvImportError as exc:
            typer.echo(f"error: {file}: {exc}", err=True)
            for line in exc.errors:
                typer.echo(f"  {line}", err=True)
            raise typer.Exit(1) from None
        store.put_plans(result.plans, expect_version=version)
    done = ", ".join(f"{name} {count}" + (" (new plan)" if name in result.created else "")
                     for name, count in result.added.items())
    verb = "replaced with" if replace else "imported"
    typer.echo(f"{verb} {sum(result.added.values())} rate(s): {done}")


@rates_app.command("export")
def rates_export(
    ctx: typer.Context,
    plans: Optional[list[str]] = typer.Option(None, "--plan", help="Plan to export (repeatable; default all)."),
    output: str = typer.Option("-", "--output", "-o", metavar="FILE", help="Output file ('-' = stdout)."),
) -> None:
    """Export plans as CSV (re-importable with 'rates import --replace')."""
    with _store(ctx) as store:
        found = store.get_plans(plans or None)
    missing = [p for p in plans or [] if p not in found]
    if missing:
        fail(f"plan {', '.join(missing)} does not exist")
    text = write_rates(found[name] for name in sorted(found))
    if output == "-":
        typer.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text)
    except OSError as exc:
        fail(f"{output}: {exc.strerror or exc}")
    count = sum(len(p.rates) for p in found.values())
    typer.echo(f"exported {count} rate(s) of {len(found)} plan(s) to {output}")


@rates_app.command("list")
def rates_list(ctx: typer.Context,
               plan: Optional[str] = typer.Option(None, "--plan", help="List this plan's rates.")) -> None:
    """List plans, or the rates of one plan."""
    with _store(ctx) as store:
        if plan is None:
            plans = store.list_plans()
            table = Table("plan", "time zone", "currency", "rates", "accounts")
            for p in plans:
                table.add_row(p.name, p.timezone, p.currency or "", str(p.rates), str(p.accounts))
            print_table(table)
            return
        rates = store.list_rates(plan)
        zone = check_timezone(store.get_plan(plan).timezone)
    table = Table("id", "prefix", "name", "per min", "connect", "increments", "min s", "rounding",
                  "currency", "valid", "period")
    for stored in rates:
        r = stored.rate
        valid = " .. ".join([format_instant(r.valid_from, zone) if r.valid_from else "",
                             format_instant(r.valid_to, zone) if r.valid_to else ""]).strip(" .")
        period = " ".join(filter(None, [
            format_weekdays(r.weekdays),
            "" if (r.time_from, r.time_to) == (0, DAY) else
            f"{format_time_of_day(r.time_from)}-{format_time_of_day(r.time_to)}"]))
        table.add_row(str(stored.id), r.prefix or "*", r.name, format(r.price_per_min, "f"),
                      format(r.connect_fee, "f"), f"{r.first_increment}/{r.next_increment}",
                      str(r.min_seconds), f"{r.rounding} {r.decimals}", r.currency, valid, period)
    print_table(table)


@rates_app.command("assign")
def rates_assign(ctx: typer.Context, account: str = typer.Argument(..., metavar="ACCOUNT"),
                 plan: str = typer.Argument(..., metavar="PLAN")) -> None:
    """Rate ACCOUNT (user@domain) with PLAN."""
    with _store(ctx) as store:
        store.assign(account, plan)
    typer.echo(f"account {account} -> plan {plan}")


@rates_app.command("unassign")
def rates_unassign(ctx: typer.Context, account: str = typer.Argument(..., metavar="ACCOUNT")) -> None:
    """Remove ACCOUNT's plan assignment."""
    with _store(ctx) as store:
        store.unassign(account)
    typer.echo(f"account {account} has no plan now")


@rates_app.command("delete")
def rates_delete(ctx: typer.Context, plan: str = typer.Argument(..., metavar="PLAN")) -> None:
    """Delete PLAN and its rates (refused while accounts use it)."""
    with _store(ctx) as store:
        gone = store.delete_plan(plan)
    typer.echo(f"deleted plan {plan} and its {gone} rate(s)")


@rates_app.command("test")
def rates_test(
    ctx: typer.Context,
    plan: str = typer.Argument(..., metavar="PLAN"),
    number: str = typer.Argument(..., metavar="NUMBER", help="Number or sip:/tel: URI."),
    duration: str = typer.Option("60", "--duration", "-d", help="Call duration in seconds (e.g. 85 or 85.5)."),
    at: Optional[str] = typer.Option(None, "--at", metavar="ISO",
                                     help="Answer time (default now); no offset = the plan's time zone."),
    credit: Optional[str] = typer.Option(None, "--credit", help="Also show how long this credit lasts."),
) -> None:
    """Rate one call and print the whole calculation."""
    try:
        seconds = parse_decimal(duration, "duration")
        duration_ms = seconds * 1000
        if duration_ms != duration_ms.to_integral_value():
            raise RatingError(f"duration {duration!r} has more than millisecond precision")
        money = None if credit is None else parse_decimal(credit, "credit")
    except RatingError as exc:
        fail(str(exc))
    with _store(ctx) as store:
        rate_plan = store.get_plan(plan)
        try:
            when = clock.utcnow() if at is None else \
                parse_instant(at, "--at", check_timezone(rate_plan.timezone))
            start_ms = to_epoch_ms(when)
            target = number_from_uri(number) if (":" in number or "@" in number) else number
            charge = rate_call(rate_plan, target, start_ms, int(duration_ms))
            longest = None if money is None else max_duration(rate_plan, target, start_ms, money)
        except RatingError as exc:
            fail(str(exc))
    for line in charge.explain():
        typer.echo(line)
    if longest is not None:
        typer.echo(f"credit {money} {charge.currency} lasts {longest} s")

