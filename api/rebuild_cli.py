"""``sipledger cdr rebuild --from T1 --to T2 [--dry-run]``: CDRs re-folded from the
event archive (cdr/archive/rebuild.py, docs/operations.md).  The same service
as ``POST /v1/cdrs/rebuild``.  With the embedded ClickHouse (chdb) a running
``up`` holds the store: then pass ``--token`` (an admin token) and the rebuild
runs in the API process."""
from __future__ import annotations

import json
from typing import Any, Optional

import typer

from cdr.archive.rebuild import RebuildLimits, rebuild_cdrs
from proxy.infra.cli import usage

from .store_cli import cdr_store, instant, through_api

cdr_app = typer.Typer(help="CDRs: rebuild them from the event archive.", no_args_is_help=True)


@cdr_app.command("rebuild")
def rebuild_command(
    ctx: typer.Context,
    from_: str = typer.Option(..., "--from", help="start (ISO 8601, a day, a month or epoch ms)"),
    to: str = typer.Option(..., "--to", help="end, exclusive (a day or month: all of it)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the differences, write nothing"),
    token: Optional[str] = typer.Option(None, "--token", envvar="SIPLEDGER_TOKEN",
                                        help="admin token: rebuild through the API when up holds the store"),
    as_json: bool = typer.Option(False, "--json", help="the report as JSON"),
) -> None:
    """Re-fold the CDRs of the calls whose first event is in [--from, --to) from the archive."""
    from_ms, to_ms = instant("from", from_), instant("to", to, end=True)
    assert from_ms is not None and to_ms is not None           # both options are required
    if to_ms <= from_ms:
        usage("--to must be after --from")
    obj = ctx.obj
    with cdr_store(obj, token, "rebuild") as store:
        if store is None:
            report = through_api(obj, token or "", "POST", "/v1/cdrs/rebuild", timeout=3600,
                                 json={"from": from_ms, "to": to_ms, "dry_run": dry_run})
        else:
            report = rebuild_cdrs(store, RebuildLimits.of(obj.config), from_ms, to_ms, dry_run=dry_run).as_dict()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(render(report))


def render(report: dict[str, Any]) -> str:
    """One line per differing call (added / changed fields / removed), then the totals."""
    lines = []
    for diff in report["diffs"]:
        head = f"{diff['change']:8} {diff['cdr_id']} {diff['call_id']}".rstrip()
        lines.append(head)
        for leg, fields in diff["legs"].items():
            for name, (old, new) in fields.items():
                lines.append(f"    leg {leg} {name}: {old!r} -> {new!r}")
    if len(report["diffs"]) < report["added"] + report["changed"] + report["removed"]:
        lines.append(f"... {len(report['diffs'])} differences shown")
    verb = "would write" if report["dry_run"] else "wrote"
    lines.append(f"{report['calls']} calls folded from {report['events']} events in {report['seconds']} s: "
                 f"{report['unchanged']} unchanged, {report['added']} added, {report['changed']} changed, "
                 f"{report['removed']} removed (not deleted), {report['live']} still live; "
                 f"{verb} {report['legs_written'] if not report['dry_run'] else 'the legs of added and changed calls'}"
                 f"{' legs' if not report['dry_run'] else ''}")
    return "\n".join(lines)
