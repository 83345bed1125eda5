"""Quality statistics: ASR, NER, SEER, ACD and PDD per time bucket and gateway,
destination prefix or account — the one function `sipledger quality` and
``GET /v1/quality`` share (definitions: docs/quality.md).

The figures come from the CDR store (``CdrStore.stats``: one ClickHouse query,
SQL common to chdb and 18.16).  Grouped by gateway, each row also carries the
gateway's probe state as the running proxy workers see it
(``DATA_DIR/run/worker-*.loaded``, proxy/runtime/loaded.py) and as provisioned
(its probe mode in the routing store).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from cdr.store.queries import CdrFilter, CdrStore
from proxy.routing.drouting import Gateway, ProbeMode
from proxy.routing.store import RoutingStore
from proxy.runtime.loaded import read_loaded

__all__ = ["Bucket", "QualityGroup", "ProbeState", "quality", "gateway_states", "probe_states"]

Bucket = Literal["5min", "hour", "day"]
QualityGroup = Literal["gateway", "prefix", "account", "none"]
# probe states: up / down (a worker's prober holds it down), not_probed
# (probe mode "never": always taken as up), unknown (no proxy running)
ProbeState = Literal["up", "down", "not_probed", "unknown"]


def gateway_states(provisioning_url: str | None, run_dir: str | Path | None) -> dict[str, ProbeState]:
    """Every provisioned gateway's probe state; {} when the stores cannot say."""
    if not provisioning_url:
        return {}
    store = RoutingStore(provisioning_url)
    try:
        gateways = store.list_gateways()
    except store.error:
        return {}
    finally:
        store.close()
    return probe_states(gateways, run_dir)


def probe_states(gateways: Iterable[Gateway], run_dir: str | Path | None) -> dict[str, ProbeState]:
    """These gateways' probe states, from what the running workers published under ``run_dir``."""
    workers = read_loaded(Path(run_dir)) if run_dir else []
    down = {name for state in workers for name in state.get("gateways_down", ())}
    states: dict[str, ProbeState] = {}
    for gateway in gateways:
        if gateway.probe is ProbeMode.NEVER:
            states[gateway.name] = "not_probed"
        elif not workers:
            states[gateway.name] = "unknown"
        else:
            states[gateway.name] = "down" if gateway.name in down else "up"
    return states


def quality(store: CdrStore, f: CdrFilter, *, bucket: Bucket = "hour", group_by: QualityGroup = "gateway",
            prefix_len: int = 2, probes: dict[str, ProbeState] | None = None) -> dict[str, Any]:
    """Rows per (bucket, group), oldest first; ``probe`` on each row when grouped by gateway."""
    rows = store.stats(f, period=bucket, group_by=group_by, prefix_len=prefix_len)
    if group_by == "gateway":
        known = probes or {}
        for row in rows:
            row["probe"] = known.get(row["group"], "unknown") if row["group"] else None
    return {"bucket": bucket, "group_by": group_by, "unit": "leg" if group_by == "gateway" else "call",
            "prefix_len": prefix_len if group_by == "prefix" else None, "rows": rows,
            "gateways": (probes or {}) if group_by == "gateway" else {}}
