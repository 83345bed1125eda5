"""``sipledger fraud``: fraud profiles and rules (OpenSIPS fraud_detection), and the alerts raised.

Rules live in the provisioning database: every worker picks a change up at its
next reload (``provisioning.reload_seconds``), counters are kept.  Alerts are
written by the workers (docs/fraud.md); ``fraud list`` reads them.
"""
from __future__ import annotations

from datetime import datetime, timezone

import typer

from proxy.core.fraud import PARAMETERS, FraudRule
from proxy.infra.cli import fail, print_rows

from .cli import open_store

__all__ = ["fraud_app"]

fraud_app = typer.Typer(help="Fraud detection: profiles, rules and alerts.", no_args_is_help=True)
profile_app = typer.Typer(help="Fraud profiles (named sets of rules).", no_args_is_help=True)
rule_app = typer.Typer(help="Fraud rules: prefix, hours, weekdays, warning/critical thresholds.",
                       no_args_is_help=True)
fraud_app.add_typer(profile_app, name="profile")
fraud_app.add_typer(rule_app, name="rule")

_THRESHOLD_HELP = "warning:critical (0 = not checked), e.g. 30:60"


@profile_app.command("add")
def profile_add(ctx: typer.Context, name: str = typer.Argument(...),
                description: str = typer.Option("", "--description")) -> None:
    """Create a profile (ctx.fraud_check() uses [fraud] profile, "default" unless set)."""
    with open_store(ctx) as store:
        store.add_fraud_profile(name, description)
    typer.echo(f"fraud profile {name} added")


@profile_app.command("del")
def profile_del(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Delete a profile and its rules."""
    with open_store(ctx) as store:
        rules = store.del_fraud_profile(name)
    typer.echo(f"fraud profile {name} deleted ({rules} rules)")


@profile_app.command("list")
def profile_list(ctx: typer.Context) -> None:
    with open_store(ctx) as store:
        profiles = store.list_fraud_profiles()
    print_rows(("profile", "description"), profiles)


def _thresholds(text: str, parameter: str) -> tuple[int, int]:
    warning, _, critical = text.partition(":")
    try:
        return int(warning or 0), int(critical or 0)
    except ValueError:
        fail(f"--{parameter.replace('_', '-')} {text!r}: {_THRESHOLD_HELP}")


@rule_app.command("add")
def rule_add(
    ctx: typer.Context,
    profile: str = typer.Argument(...),
    prefix: str = typer.Option("", "--prefix", help="dialled-number prefix (digits; '' = any)"),
    hours: str = typer.Option("00:00-23:59", "--hours", help="HH:MM-HH:MM (UTC), may cross midnight"),
    days: str = typer.Option("mon-sun", "--days", help="mon..sun, ranges and commas: mon-fri,sun"),
    cpm: str = typer.Option("0:0", "--cpm", help=f"calls per minute: {_THRESHOLD_HELP}"),
    total_calls: str = typer.Option("0:0", "--total-calls", help=f"calls in the interval: {_THRESHOLD_HELP}"),
    concurrent_calls: str = typer.Option("0:0", "--concurrent-calls", help=_THRESHOLD_HELP),
    sequential_calls: str = typer.Option("0:0", "--sequential-calls", help=_THRESHOLD_HELP),
    call_duration: str = typer.Option("0:0", "--call-duration", help=f"seconds: {_THRESHOLD_HELP}"),
) -> None:
    """Add a rule to a profile (the longest matching prefix active now is used)."""
    start, _, end = hours.partition("-")
    given = {"cpm": cpm, "total_calls": total_calls, "concurrent_calls": concurrent_calls,
             "sequential_calls": sequential_calls, "call_duration": call_duration}
    levels: dict[str, int] = {}
    for parameter in PARAMETERS:
        levels[f"{parameter}_warning"], levels[f"{parameter}_critical"] = _thresholds(given[parameter], parameter)
    rule = FraudRule(rule_id=0, profile=profile, prefix=prefix, start_hour=start, end_hour=end or "23:59",
                     days=days, **levels)
    with open_store(ctx) as store:
        rule_id = store.add_fraud_rule(rule)
    typer.echo(f"fraud rule {rule_id} added to {profile}")


@rule_app.command("del")
def rule_del(ctx: typer.Context, rule_id: int = typer.Argument(...)) -> None:
    with open_store(ctx) as store:
        store.del_fraud_rule(rule_id)
    typer.echo(f"fraud rule {rule_id} deleted")


@rule_app.command("list")
def rule_list(ctx: typer.Context, profile: str = typer.Option(None, "--profile")) -> None:
    with open_store(ctx) as store:
        rules = [r for r in store.fraud_rules() if profile is None or r.profile == profile]
    print_rows(("id", "profile", "prefix", "hours", "days", *PARAMETERS), (
        (str(r.rule_id), r.profile, r.prefix or "*", f"{r.start_hour}-{r.end_hour}", r.days,
         *(":".join(map(str, r.thresholds(p))) for p in PARAMETERS)) for r in rules))


@fraud_app.command("list")
def alert_list(ctx: typer.Context,
               user: str = typer.Option(None, "--user", help="user@domain"),
               severity: str = typer.Option(None, "--severity", help="warning or critical"),
               limit: int = typer.Option(50, "--limit", min=1, max=10_000)) -> None:
    """The alerts raised, newest first."""
    with open_store(ctx) as store:
        alerts = store.fraud_alerts(user=user, severity=severity, limit=limit)
    print_rows(("at (UTC)", "severity", "parameter", "value", "threshold", "user", "number", "rule",
                "action", "call-id"), (
        (datetime.fromtimestamp(a["at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), a["severity"],
         a["parameter"], str(a["value"]), str(a["threshold"]), a["user"], a["number"],
         f"{a['profile']}/{a['rule_id']}", a["action"], a["call_id"]) for a in alerts))
