"""What the routes find on ``app.state``: the stores one API process opens once.

Why a dataclass: its fields are the ``app.state`` keys (api/deps.py reads
them by these names), typed and listed in one place.  The process entry
(api/serve.py) opens it; tests build one over stores of their own.

``open`` adds the billing side (billing database, billing service client,
ClickHouse ledger copy) to a CDR store and a token store; ``close`` closes
what ``open`` opened -- the CDR store and the token store stay their
opener's.  A field left None makes its routes answer 503.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from billing.client import BillingClient
from billing.ledger.clickhouse import LedgerQueries
from billing.ledger.store import LedgerStore
from billing.rating.store import RatesStore
from cdr.archive.rebuild import RebuildLimits
from cdr.store.queries import CdrStore
from proxy.infra.config import BillingSettings, Config
from proxy.provisioning.store import ProvisioningStore
from proxy.provisioning.store import default_url as provisioning_default_url
from proxy.routing.store import RoutingStore

from .calls import LiveCalls
from .tokens import TokenStore

__all__ = ["AppState"]


@dataclass
class AppState:
    cdr_store: CdrStore
    token_store: TokenStore
    billing_settings: BillingSettings = field(default_factory=BillingSettings)
    ledger_store: LedgerStore | None = None        # accounts and the ledger (SQL, read)
    rates_store: RatesStore | None = None          # rate plans, rates, assignments
    billing_client: BillingClient | None = None    # writes: the billing service, the ledger's one writer
    ledger_queries: LedgerQueries | None = None    # the ledger's ClickHouse copy (history, reports)
    live_calls: LiveCalls | None = None            # the proxy workers' live calls, hang-up (api/calls.py)
    provisioning_url: str | None = None            # fraud alerts, gateways (quality's probe state)
    run_dir: str | None = None                     # DATA_DIR/run: the workers' published state
    provisioning_store: ProvisioningStore | None = None   # users, domains, aliases (/v1/users ...)
    routing_store: RoutingStore | None = None             # gateways ... forwarding (/v1/gateways ...)
    rebuild_limits: RebuildLimits = field(default_factory=RebuildLimits)   # CDR rebuild (cdr/archive)

    @classmethod
    def open(cls, cdr_store: CdrStore, token_store: TokenStore, config: Config,
             data_dir: str | os.PathLike) -> AppState:
        billing = config.billing
        url = billing.database_url(data_dir)
        provisioning_url = config.provisioning.url or provisioning_default_url(data_dir)
        ledger_store = LedgerStore(url)
        rates_store = RatesStore(url)
        provisioning_store = ProvisioningStore(provisioning_url)
        routing_store = RoutingStore(provisioning_url)
        opened = (ledger_store, rates_store, provisioning_store, routing_store)
        try:
            for store in opened:
                store.create_schema()
        except BaseException:
            for store in opened:
                store.close()
            raise
        return cls(cdr_store=cdr_store, token_store=token_store, billing_settings=billing,
                   ledger_store=ledger_store, rates_store=rates_store,
                   billing_client=BillingClient(data_dir, billing),
                   ledger_queries=LedgerQueries(cdr_store.backend),
                   live_calls=LiveCalls(Path(data_dir), config),
                   provisioning_url=provisioning_url, run_dir=str(Path(data_dir) / "run"),
                   provisioning_store=provisioning_store, routing_store=routing_store,
                   rebuild_limits=RebuildLimits.of(config))

    def install(self, app) -> None:
        for f in fields(self):
            setattr(app.state, f.name, getattr(self, f.name))

    def close(self) -> None:
        for store in (self.ledger_store, self.rates_store, self.provisioning_store, self.routing_store):
            if store is not None:
                store.close()
