"""`sipledger pike`: the sources each running proxy worker blocks right now.

Reads DATA_DIR/run/pike-worker-<i>.json (written by proxy/runtime/floodguard.py
every ``pike.publish_seconds``); a file left by a worker that is gone is
reported as stale rather than trusted.
"""
from __future__ import annotations

import json

import typer

from proxy.infra.cli import print_rows
from proxy.infra.config import RUN_DIR
from proxy.infra.runfiles import pid_alive

from .floodguard import read_pike_states

pike_app = typer.Typer(help="Flood protection: sources blocked by the pike, per worker.",
                       invoke_without_command=True, no_args_is_help=False)


@pike_app.callback()
def pike(ctx: typer.Context,
         as_json: bool = typer.Option(False, "--json", help="The workers' published state as JSON.")) -> None:
    """Print the sources blocked by each running worker's pike, and its counters."""
    states = read_pike_states(ctx.obj.data_dir / RUN_DIR)
    for state in states:
        state["stale"] = not pid_alive(state.get("pid"))
    if as_json:
        typer.echo(json.dumps(states, indent=2))
        return
    if not states:
        typer.echo("no running proxy worker has published its pike state")
        return
    rows = []
    for state in states:
        worker = f"{state.get('worker')}" + (" (stale)" if state["stale"] else "")
        for entry in state.get("blocked", []):
            rows.append((worker, str(entry.get("source")), f"{entry.get('seconds_left', 0):.0f}",
                         str(entry.get("requests_refused", 0))))
    if rows:
        print_rows(("worker", "source", "blocked for (s)", "requests refused"), rows)
    else:
        typer.echo("no source is blocked")
    for state in states:
        pk, ov = state.get("pike") or {}, state.get("overload") or {}
        shown = len(state.get("blocked", []))
        more = state.get("blocked_count", shown) - shown
        typer.echo(f"worker {state.get('worker')}: pike {'on' if pk else 'off'}"
                   + (f", {pk.get('dropped', 0)} of {pk.get('requests', 0)} requests refused, "
                      f"{pk.get('tracked', 0)} sources tracked" if pk else "")
                   + (f", {more} more blocked sources not listed" if more > 0 else "")
                   + (f"; overload {'SHEDDING' if ov.get('shedding') else 'ok'}, "
                      f"{ov.get('shed', 0)} requests shed" if ov else "; overload shedder off"))
