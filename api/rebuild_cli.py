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
from cdr.store.queries import CdrStore
from proxy.infra.cli import fail, usage
from proxy.infra.clickhouse.backend import BackendError, open_backend
from proxy.infra.clickhouse.migrate import MigrationError, migrate

cdr_app = typer.Typer(help="CDRs: rebuild them from the event archive.", no_args_is_help=True)


def _instant(name: str, value: str, *, end: bool = False) -> int:
    try:
        from .params import parse_instant  # FastAPI's import chain: only when needed
        return parse_instant(value, end=end)
    except ValueError as exc:
        usage(f"--{name} {value!r}: {exc}")


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
    from_ms, to_ms = _instant("from", from_), _instant("to", to, end=True)
    if to_ms <= from_ms:
        usage("--to must be after --from")
    obj = ctx.obj
    config = obj.config
    try:
        backend = open_backend(config.clickhouse, obj.data_dir)
    except BackendError as exc:
        message = str(exc).splitlines()[0]
        if "another process" not in message:
            fail(f"CDR store: {message}")
        if not token:
            fail(f"{message}\n  rebuild through the API: --token ADMIN_TOKEN")
        report = _through_api(f"http://127.0.0.1:{config.api.port}", token,
                              {"from": from_ms, "to": to_ms, "dry_run": dry_run})
    else:
        try:
            migrate(backend)
            report = rebuild_cdrs(CdrStore(backend), RebuildLimits.of(config), from_ms, to_ms,
                                  dry_run=dry_run).as_dict()
        except (BackendError, MigrationError) as exc:
            fail(str(exc).splitlines()[0])
        finally:
            backend.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(render(report))


def _through_api(api: str, token: str, params: dict[str, Any]) -> dict[str, Any]:
    import httpx
    try:
        response = httpx.post(f"{api}/v1/cdrs/rebuild", json=params, timeout=3600,
                              headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        fail(f"API {api}: {exc}")
    if response.status_code != 200:
        fail(f"API {api}: {response.status_code} {response.text[:300]}")
    return response.json()


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
