"""The routing data as a running proxy sees it: one immutable, consistent value.

Built by ``RoutingStore.snapshot()`` in one read transaction and swapped
whole by ``LiveRouting`` when the routing change counter moves; the routing
script calls the methods below and never waits on SQL.  No SQLAlchemy here.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from .dialplan import DialplanRule, Dialplans
from .drouting import DEFAULT_GROUP, BlacklistEntry, Blacklists, DRouting, Gateway, Route
from .forwarding import ForwardingPrefs, MediaDestination
from .permissions import Groups, TrustedSource, TrustedSources

__all__ = ["RoutingSnapshot"]


@dataclass(frozen=True)
class RoutingSnapshot:
    version: int = 0
    drouting: DRouting = field(default_factory=DRouting)
    dialplans: Dialplans = field(default_factory=Dialplans)
    blacklists: Blacklists = field(default_factory=Blacklists)
    trusted: TrustedSources = field(default_factory=TrustedSources)
    groups: Groups = field(default_factory=Groups)
    forwardings: Mapping[tuple[str, str], ForwardingPrefs] = field(default_factory=dict)
    media: Mapping[str, MediaDestination] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("forwardings", "media"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    # -- gateways (drouting) -----------------------------------------------------------
    @property
    def gateways(self) -> Mapping[str, Gateway]:
        return self.drouting.gateways

    def select(self, number: str, group: str = DEFAULT_GROUP, at: datetime | float | None = None,
               call_key: str = "", is_up: Callable[[str], bool] | None = None) -> list[Route]:
        """do_routing: the ordered failover routes for ``number`` (see DRouting.select)."""
        return self.drouting.select(number, group, at, call_key, is_up)

    def from_gateway(self, host: str, port: int | None = None) -> Gateway | None:
        return self.drouting.from_gateway(host, port)

    # -- dialplan / blacklists ---------------------------------------------------------------
    def translate(self, dpid: int, value: str) -> tuple[str, DialplanRule] | None:
        return self.dialplans.translate(dpid, value)

    def blacklisted(self, name: str, number: str) -> BlacklistEntry | None:
        return self.blacklists.blacklisted(name, number)

    # -- permissions and groups ----------------------------------------------------------------
    def is_trusted(self, ip: str, transport: str | None = None) -> TrustedSource | None:
        return self.trusted.is_trusted(ip, transport)

    def in_group(self, user: str, domain: str, group: str) -> bool:
        return self.groups.in_group(user, domain, group)

    def allowed(self, user: str | None, domain: str | None, number: str) -> tuple[bool, str | None]:
        return self.groups.allowed(user, domain, number)

    # -- forwarding -------------------------------------------------------------------------------
    def forwarding(self, user: str, domain: str) -> ForwardingPrefs:
        """The subscriber's preferences; an empty (falsy) one when none are set."""
        domain = domain.lower()
        prefs = self.forwardings.get((user, domain))
        return prefs if prefs is not None else ForwardingPrefs(user, domain)

    def summary(self) -> str:
        d = self.drouting
        return (f"{len(d.gateways)} gateways, {len(d.carriers)} carriers, {len(d.rules)} routes, "
                f"{len(self.dialplans)} dialplan rules, {len(self.blacklists)} blacklist entries, "
                f"{len(self.trusted)} trusted sources, {len(self.groups)} group memberships, "
                f"{len(self.forwardings)} forwardings")
