"""`sipledger`: the one command line for running and provisioning the product."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from billing.cli import account_app, ledger_app, rates_app, report_app, rerate_app
from cdr.store.cli import db_app
from proxy.infra import config as config_mod
from proxy.infra.cli import fail, usage
from proxy.infra.config import ENV_CONFIG, ENV_DATA_DIR, ConfigError, resolve_paths
from proxy.provisioning.cli import alias_app, domain_app, user_app
from proxy.provisioning.fraud_cli import fraud_app
from proxy.provisioning.lockout_cli import auth_app
from proxy.provisioning.store import default_url
from proxy.routing.cli import (
    blacklist_app,
    carrier_app,
    dialplan_app,
    forward_app,
    gateway_app,
    group_app,
    route_app,
    trusted_app,
)
from proxy.runtime.pike_cli import pike_app

from . import calls_cli
from .kafka_cli import kafka_app
from .quality_cli import quality_command
from .rebuild_cli import cdr_app
from .tokens import token_app
from .trace_cli import trace as trace_cmd

app = typer.Typer(help="sipledger: SIP proxy with event-sourced accounting and billing.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(user_app, name="user")
app.add_typer(domain_app, name="domain")
app.add_typer(alias_app, name="alias")
app.add_typer(gateway_app, name="gateway")
app.add_typer(carrier_app, name="carrier")
app.add_typer(route_app, name="route")
app.add_typer(dialplan_app, name="dialplan")
app.add_typer(blacklist_app, name="blacklist")
app.add_typer(trusted_app, name="trusted")
app.add_typer(group_app, name="group")
app.add_typer(forward_app, name="forward")
app.add_typer(rates_app, name="rates")
app.add_typer(account_app, name="account")
app.add_typer(ledger_app, name="ledger")
app.add_typer(report_app, name="report")
app.add_typer(rerate_app, name="rerate")
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")
app.add_typer(kafka_app, name="kafka")
app.add_typer(auth_app, name="auth")
app.add_typer(pike_app, name="pike")
app.command("calls")(calls_cli.calls)
app.command("hangup")(calls_cli.hangup)
app.add_typer(fraud_app, name="fraud")
app.command("quality")(quality_command)
app.add_typer(cdr_app, name="cdr")         # api/rebuild_cli.py: rebuild from the event archive


@dataclass
class CliContext:
    data_dir: Path
    config_file: Path | None
    config: config_mod.Config

    @property
    def provisioning_url(self) -> str:
        return self.config.provisioning.url or default_url(self.data_dir)


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: str = typer.Option(None, "--data-dir", envvar=ENV_DATA_DIR,
                                 help="Where everything persistent lives (default ./data)."),
    config: str = typer.Option(None, "--config", envvar=ENV_CONFIG,
                               help="TOML config file (default DATA_DIR/sipledger.toml if present)."),
) -> None:
    data, cfg_file = resolve_paths(data_dir, config)
    try:
        loaded = config_mod.load(cfg_file)
    except ConfigError as exc:
        usage(str(exc))
    data.mkdir(parents=True, exist_ok=True)
    ctx.obj = CliContext(data, cfg_file, loaded)


@app.command()
def up(ctx: typer.Context,
       sip_port: int = typer.Option(None, "--sip-port", help="SIP UDP/TCP port (overrides proxy.sip_port)."),
       api_port: int = typer.Option(None, "--api-port", help="REST API port (overrides api.port).")) -> None:
    """Run the whole product: broker (embedded), proxy and processors; Ctrl-C stops it all.

    Prints READY once every service is ready; otherwise one line saying which
    service did not start and why, exit status 1, and nothing left running."""
    from .supervisor import StartError, Up
    obj: CliContext = ctx.obj
    try:        # the command-line ports are checked like the file's keys, before anything starts
        config = config_mod.load(obj.config_file, {"proxy": {"sip_port": sip_port}, "api": {"port": api_port}})
    except ConfigError as exc:
        usage(str(exc))
    try:
        code = Up(config, obj.data_dir, obj.config_file).run()
    except StartError as exc:
        fail(str(exc))
    raise typer.Exit(code)


app.command("trace")(trace_cmd)      # api/trace_cli.py (docs/trace.md)


@app.command("stats")
def stats(ctx: typer.Context,
          group: str = typer.Argument(None, help="core, tm, sl, dialog, usrloc, auth, events, pike, shedder, "
                                                 "media, credit, consumer, cdr, ledger, radius (default: all)"),
          watch: bool = typer.Option(False, "--watch", help="Refresh every second until Ctrl-C."),
          interval: float = typer.Option(1.0, "--interval", min=0.2, help="Seconds between refreshes.")) -> None:
    """Print the running `up`'s metrics, group:name = value (what /metrics serves)."""
    from proxy.infra import metrics
    from proxy.infra.config import RUN_DIR
    obj: CliContext = ctx.obj
    if group is not None and group not in metrics.GROUPS:
        usage(f"unknown group {group!r}; one of: {', '.join(metrics.GROUPS)}")
    directory = obj.data_dir / RUN_DIR / metrics.METRICS_DIR
    if not obj.config.metrics.enabled or not any(directory.glob("*.db")):
        fail(f"no metrics under {directory}: is `sipledger up` running with [metrics] enabled = true?")
    _print_stats(directory, group, watch, interval)


def _print_stats(directory: Path, group: str | None, watch: bool, interval: float) -> None:
    import time

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from proxy.infra import metrics

    def table() -> Table:
        out = Table(box=None, show_header=False, pad_edge=False)
        out.add_column("name", style="bold")
        out.add_column("value", justify="right")
        for name, value in metrics.figures(metrics.snapshot(directory), group):
            out.add_row(name, f"{value:g}")
        return out

    console = Console()
    if not watch:
        console.print(table())
        return
    with Live(table(), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(table(), refresh=True)


@app.command("config")
def show_config(ctx: typer.Context) -> None:
    """Print the effective configuration (defaults filled in) as TOML-like JSON."""
    import msgspec
    typer.echo(msgspec.json.format(msgspec.json.encode(ctx.obj.config)).decode())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
