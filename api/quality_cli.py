"""``sipledger quality``: ASR, NER, SEER, ACD, PDD per bucket and gateway / prefix /
account, as a table (docs/quality.md).  The same function as ``GET /v1/quality``
(api/quality.py).  With the embedded ClickHouse (chdb) a running ``up`` holds
the store: then pass ``--token`` (an admin token) and the figures come through
the API."""
from __future__ import annotations

from typing import Any, Optional

import typer
from rich.table import Table

from cdr.store.queries import CdrFilter
from proxy.infra.cli import print_table, usage

from .quality import gateway_states, quality
from .store_cli import cdr_store, instant, through_api

BUCKETS = ("5min", "hour", "day")
GROUPS = ("gateway", "prefix", "account", "none")


def quality_command(
    ctx: typer.Context,
    from_: Optional[str] = typer.Option(None, "--from", help="start (ISO 8601, a day, a month or epoch ms)"),
    to: Optional[str] = typer.Option(None, "--to", help="end, exclusive (a day or month: all of it)"),
    bucket: str = typer.Option("hour", "--bucket", help="5min, hour or day (UTC)"),
    group_by: str = typer.Option("gateway", "--group-by", help="gateway, prefix, account or none"),
    prefix_len: int = typer.Option(2, "--prefix-len", min=1, max=16, help="digits when --group-by prefix"),
    account: Optional[str] = typer.Option(None, "--account", help="only this account's calls"),
    token: Optional[str] = typer.Option(None, "--token", envvar="SIPLEDGER_TOKEN",
                                        help="admin token: read through the API when up holds the store"),
    as_json: bool = typer.Option(False, "--json", help="the API's JSON instead of a table"),
) -> None:
    """Call quality: ASR, NER, SEER, ACD, PDD (docs/quality.md)."""
    if bucket not in BUCKETS:
        usage(f"--bucket {bucket!r}: one of {', '.join(BUCKETS)}")
    if group_by not in GROUPS:
        usage(f"--group-by {group_by!r}: one of {', '.join(GROUPS)}")
    from_ms, to_ms = instant("from", from_), instant("to", to, end=True)
    obj = ctx.obj
    with cdr_store(obj, token, "read it") as store:
        if store is None:
            params = {"bucket": bucket, "group_by": group_by, "prefix_len": prefix_len, "from": from_ms,
                      "to": to_ms, "account": account}
            data = through_api(obj, token or "", "GET", "/v1/quality", timeout=60,
                               params={k: v for k, v in params.items() if v is not None})
        else:
            probes = gateway_states(obj.provisioning_url, obj.data_dir / "run") if group_by == "gateway" else {}
            data = quality(store, CdrFilter(account=account, from_ms=from_ms, to_ms=to_ms),
                           bucket=bucket, group_by=group_by, prefix_len=prefix_len,  # type: ignore[arg-type]
                           probes=probes)
    if as_json:
        import json
        typer.echo(json.dumps(data, indent=2))
        return
    print_table(render(data))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render(data: dict[str, Any]) -> Table:
    by_gateway = data["group_by"] == "gateway"
    table = Table("bucket", data["group_by"] if data["group_by"] != "none" else "all",
                  *(("probe",) if by_gateway else ()),
                  f"attempts ({data['unit']}s)", "answered", "ASR", "NER", "SEER", "ACD s", "PDD mean ms",
                  "PDD p95 ms", title=f"Call quality per {data['bucket']} (UTC)")
    for row in data["rows"]:
        pdd = row["pdd_ms"]
        table.add_row(row["period"][:16].replace("T", " "), row["group"] or "-",
                      *((row.get("probe") or "-",) if by_gateway else ()),
                      str(row["attempts"]), str(row["answered"]), _pct(row["asr"]), _pct(row["ner"]),
                      _pct(row["seer"]), "-" if row["acd_s"] is None else f"{row['acd_s']:.1f}",
                      "-" if pdd["mean"] is None else f"{pdd['mean']:.0f}",
                      "-" if pdd["p95"] is None else str(pdd["p95"]))
    return table
