"""Routing data as a running proxy sees it: a ``RoutingSnapshot`` refreshed
when the routing change counter moves (``LiveSnapshot``, like provisioning).

Give it the worker's ``GatewayProber`` and a reload also updates the set of
probed gateways (new ones start up, removed ones are forgotten).
"""
from __future__ import annotations

from proxy.provisioning.live import LiveSnapshot

from .probing import GatewayProber
from .snapshot import RoutingSnapshot
from .store import RoutingStore

__all__ = ["LiveRouting"]


class LiveRouting(LiveSnapshot[RoutingSnapshot]):
    what = "routing"

    def __init__(self, store: RoutingStore, poll_interval: float = 1.0, *,
                 prober: GatewayProber | None = None):
        super().__init__(store, poll_interval)
        self.prober = prober
        if prober is not None:
            prober.set_gateways(self.snapshot.gateways.values())

    def describe(self, snapshot: RoutingSnapshot) -> str:
        return snapshot.summary()

    def reloaded(self, snapshot: RoutingSnapshot, now: float) -> None:
        if self.prober is not None:
            self.prober.set_gateways(snapshot.gateways.values(), now)

    def is_up(self, name: str) -> bool:
        """The prober's view (every gateway is up without one)."""
        return self.prober is None or self.prober.is_up(name)
