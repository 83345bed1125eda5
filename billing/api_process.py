"""The billing parts of the API process (api/serve.py): the ClickHouse ledger
sink + repair, and the REST routes.  Two calls, so serve.py stays small:

* ``start_ledger_sink(backend, kafka, config, data_dir, tasks)`` with the CDR sink;
* ``mount_billing(app, backend, tokens, config, data_dir)`` after ``create_app``.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.infra.config import BillingSettings, LedgerSettings

__all__ = ["start_ledger_sink", "mount_billing"]


class _Stopper:
    def __init__(self, sink, repair, store):
        self.sink, self.repair, self.store = sink, repair, store

    def stop(self) -> None:
        self.sink.stop()
        self.repair.stop()

    def close(self) -> None:
        self.store.close()


def start_ledger_sink(backend, kafka, config, data_dir: Path | None, tasks: dict) -> _Stopper | None:
    """Start ``ledger.events`` -> ClickHouse and the SQLite repair as tasks in ``tasks``."""
    if data_dir is None:
        return None
    from .ledger.clickhouse import LedgerQueries, LedgerRepair, LedgerSink
    from .ledger.store import LedgerStore

    ledger = getattr(config, "ledger", None) or LedgerSettings()
    billing = getattr(config, "billing", None) or BillingSettings()
    ch = config.clickhouse
    queries = LedgerQueries(backend)
    sink = LedgerSink(queries, kafka, topic=ledger.events_topic, group_id=ledger.sink_group,
                      batch_rows=ch.batch_rows, batch_ms=ch.batch_ms,
                      partitions=ledger.partitions or kafka.partitions)
    store = LedgerStore(billing.database_url(data_dir))
    store.create_schema()
    repair = LedgerRepair(queries, store, interval_s=ledger.repair_seconds)
    tasks["ledger-sink"] = asyncio.create_task(sink.run(), name="ledger-sink")
    tasks["ledger-repair"] = asyncio.create_task(repair.run(), name="ledger-repair")
    return _Stopper(sink, repair, store)


def mount_billing(app, backend, tokens, config, data_dir: Path | None):
    """Add the billing routes (billing/api.py) to ``app``."""
    if data_dir is None:
        return None
    from .api import BillingApi, billing_router

    api = BillingApi(data_dir, getattr(config, "billing", None) or BillingSettings(),
                     getattr(config, "ledger", None) or LedgerSettings(), backend)
    app.include_router(billing_router(api, tokens))
    return api
