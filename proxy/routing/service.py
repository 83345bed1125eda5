"""Routing data: the one service layer `sipledger gateway|carrier|route|dialplan|
blacklist|trusted|group|forward` and the matching ``/v1/...`` routes both call
(docs/provisioning.md has the CLI <-> REST table).

Each function takes an open ``RoutingStore`` and values as an operator gives
them (the CLI's text, or the REST body's fields), builds the row with the
pure constructors the snapshot uses (``Gateway``, ``RouteRule``...), stores it
and returns what was stored.  Refusals are ``RoutingError`` (a
``ProvisioningError``): one line, the message the CLI prints after
``error:`` and the REST API answers as ``detail``.  The store bumps the
routing change log in the same transaction, so a running proxy reloads at its
next poll (about a second) whoever made the change.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from proxy.infra import clock
from proxy.provisioning.models import ProvisioningError, parse_address

from .common import RoutingError
from .dialplan import DialplanRule
from .drouting import (
    DEFAULT_GROUP,
    FILTERED_CODE,
    FILTERED_REASON,
    BlacklistEntry,
    Carrier,
    Gateway,
    Route,
    RouteRule,
    parse_gwlist,
    parse_time_window,
)
from .drouting import parse_address as parse_gateway_address
from .forwarding import Condition, ForwardingPrefs, MediaDestination
from .permissions import GroupRequirement, TrustedSource, parse_network
from .store import UNSET, GroupMember, RoutingStore, StoredForwarding

__all__ = ["GatewayList", "add_gateway", "update_gateway", "delete_gateway", "list_gateways", "get_gateway",
           "add_carrier", "update_carrier", "delete_carrier", "list_carriers", "get_carrier",
           "add_route", "update_route", "delete_route", "list_routes", "get_route", "test_route", "parse_instant",
           "add_dialplan_rule", "update_dialplan_rule", "delete_dialplan_rule", "list_dialplan",
           "get_dialplan_rule", "test_dialplan",
           "add_blacklist", "delete_blacklist", "list_blacklist", "get_blacklist", "test_blacklist",
           "add_trusted", "delete_trusted", "list_trusted", "get_trusted",
           "add_to_group", "remove_from_group", "list_group_members", "get_group_member",
           "require_group", "unrequire_group", "list_group_requirements", "get_group_requirement",
           "set_forwarding", "clear_forwarding", "find_forwarding", "get_forwarding", "list_forwarding", "CLEAR_WORDS",
           "add_media", "delete_media", "list_media", "get_media", "subscriber_address"]

GatewayList = str | Iterable[str]          # "gw1,#c1" (CLI) or ["gw1", "#c1"] (REST)
Weights = str | Iterable[int] | None       # "70,30" or [70, 30]
CLEAR_WORDS = ("", "none", "-")            # a forwarding target given as one of these clears it


def _address(text: str) -> tuple[str, str]:
    try:
        return parse_address(text)
    except ProvisioningError as exc:
        raise RoutingError(str(exc)) from None


def subscriber_address(text: str) -> str:
    """``user@domain`` as stored (domain lower-cased, ``sip:`` dropped)."""
    user, domain = _address(text)
    return f"{user}@{domain}"


# -- gateways ----------------------------------------------------------------------------------

def _gateway(name: str, address: str, transport: str, strip: int, prefix: str, probe: str, attrs: str) -> Gateway:
    host, port = parse_gateway_address(address)
    return Gateway(name, host, port, transport, strip, prefix, probe, attrs)   # type: ignore[arg-type]


def add_gateway(store: RoutingStore, name: str, address: str, transport: str = "udp", strip: int = 0,
                prefix: str = "", probe: str = "never", attrs: str = "") -> Gateway:
    gateway = _gateway(name, address, transport, strip, prefix, probe, attrs)
    store.add_gateway(gateway)
    return gateway


def update_gateway(store: RoutingStore, name: str, address: str, transport: str = "udp", strip: int = 0,
                   prefix: str = "", probe: str = "never", attrs: str = "") -> Gateway:
    gateway = _gateway(name, address, transport, strip, prefix, probe, attrs)
    store.update_gateway(gateway)
    return gateway


def delete_gateway(store: RoutingStore, name: str) -> None:
    store.del_gateway(name)


def list_gateways(store: RoutingStore) -> list[Gateway]:
    return store.list_gateways()


def get_gateway(store: RoutingStore, name: str) -> Gateway:
    return _one((g for g in store.list_gateways() if g.name == name), f"gateway {name} does not exist")


# -- carriers ----------------------------------------------------------------------------------

def _carrier(name: str, gateways: GatewayList, weights: Weights, attrs: str) -> Carrier:
    return Carrier(name, parse_gwlist(gateways, weights, carriers=False, what=f"carrier {name}"), attrs)


def add_carrier(store: RoutingStore, name: str, gateways: GatewayList, weights: Weights = None,
                attrs: str = "") -> Carrier:
    carrier = _carrier(name, gateways, weights, attrs)
    store.add_carrier(carrier)
    return carrier


def update_carrier(store: RoutingStore, name: str, gateways: GatewayList, weights: Weights = None,
                   attrs: str = "") -> Carrier:
    carrier = _carrier(name, gateways, weights, attrs)
    store.update_carrier(carrier)
    return carrier


def delete_carrier(store: RoutingStore, name: str) -> None:
    store.del_carrier(name)


def list_carriers(store: RoutingStore) -> list[Carrier]:
    return store.list_carriers()


def get_carrier(store: RoutingStore, name: str) -> Carrier:
    return _one((c for c in store.list_carriers() if c.name == name), f"carrier {name} does not exist")


# -- routes ------------------------------------------------------------------------------------

def _route(prefix: str, gateways: GatewayList, groups: str | Iterable[str], priority: int, weights: Weights,
           time_window: str | None, weekdays: str | None, tz: str, attrs: str, rule_id: int = 0) -> RouteRule:
    refs = parse_gwlist(gateways, weights)
    window = parse_time_window(time_window, weekdays, tz)
    names = groups.split(",") if isinstance(groups, str) else list(groups)
    return RouteRule(prefix, refs, frozenset(g.strip() for g in names), priority, window, attrs, rule_id)


def add_route(store: RoutingStore, prefix: str, gateways: GatewayList, groups: str | Iterable[str] = DEFAULT_GROUP,
              priority: int = 0, weights: Weights = None, time_window: str | None = None,
              weekdays: str | None = None, tz: str = "UTC", attrs: str = "") -> RouteRule:
    rule = _route(prefix, gateways, groups, priority, weights, time_window, weekdays, tz, attrs)
    rule_id = store.add_rule(rule)
    return _route(prefix, gateways, groups, priority, weights, time_window, weekdays, tz, attrs, rule_id)


def update_route(store: RoutingStore, rule_id: int, prefix: str, gateways: GatewayList,
                 groups: str | Iterable[str] = DEFAULT_GROUP, priority: int = 0, weights: Weights = None,
                 time_window: str | None = None, weekdays: str | None = None, tz: str = "UTC",
                 attrs: str = "") -> RouteRule:
    rule = _route(prefix, gateways, groups, priority, weights, time_window, weekdays, tz, attrs, rule_id)
    store.update_rule(rule_id, rule)
    return rule


def delete_route(store: RoutingStore, rule_id: int) -> None:
    store.del_rule(rule_id)


def list_routes(store: RoutingStore) -> list[RouteRule]:
    """In the order the CLI lists them: prefix, then the higher priority first."""
    return sorted(store.list_rules(), key=lambda r: (r.prefix, -r.priority, r.id))


def get_route(store: RoutingStore, rule_id: int) -> RouteRule:
    return _one((r for r in store.list_rules() if r.id == rule_id), f"route #{rule_id} does not exist")


def parse_instant(text: str | None) -> datetime:
    """``--at`` / ``at=``: ISO 8601 (no offset = UTC); now when not given."""
    if not text:
        return clock.utcnow()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RoutingError(f"invalid time {text[:40]!r} (ISO 8601, e.g. 2025-01-31T09:30+01:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def test_route(store: RoutingStore, number: str, group: str = DEFAULT_GROUP, at: str | None = None,
               call_id: str = "") -> list[Route]:
    """The gateways a call to ``number`` would try, in order (every gateway counted as up)."""
    when = parse_instant(at)
    routes = store.drouting().select(number, group, when, call_id)
    if not routes:
        raise RoutingError(f"no route for {number} (group {group})")
    return routes


# -- dialplans ---------------------------------------------------------------------------------

def add_dialplan_rule(store: RoutingStore, dpid: int, match: str, subst: str | None = None,
                      repl: str | None = None, priority: int = 0, attrs: str = "") -> DialplanRule:
    rule = DialplanRule(dpid, match, subst or None, repl, priority, attrs)
    rule_id = store.add_dialplan_rule(rule)
    return DialplanRule(dpid, match, subst or None, repl, priority, attrs, rule_id)


def update_dialplan_rule(store: RoutingStore, rule_id: int, dpid: int, match: str, subst: str | None = None,
                         repl: str | None = None, priority: int = 0, attrs: str = "") -> DialplanRule:
    get_dialplan_rule(store, rule_id, dpid)
    rule = DialplanRule(dpid, match, subst or None, repl, priority, attrs, rule_id)
    store.update_dialplan_rule(rule_id, rule)
    return rule


def delete_dialplan_rule(store: RoutingStore, rule_id: int, dpid: int | None = None) -> DialplanRule:
    """``dpid``: the rule must belong to that dialplan (REST names both)."""
    if dpid is not None:
        get_dialplan_rule(store, rule_id, dpid)
    return store.del_dialplan_rule(rule_id)


def list_dialplan(store: RoutingStore, dpid: int | None = None) -> list[DialplanRule]:
    return store.list_dialplan(dpid)


def get_dialplan_rule(store: RoutingStore, rule_id: int, dpid: int | None = None) -> DialplanRule:
    """``dpid``: the rule must belong to that dialplan (another's is missing from its view)."""
    return _one((r for r in store.list_dialplan(dpid) if r.id == rule_id), f"dialplan rule #{rule_id} does not exist")


def test_dialplan(store: RoutingStore, dpid: int, number: str) -> tuple[str, DialplanRule]:
    """``number`` rewritten by dialplan ``dpid`` as the proxy would, and the rule that did it."""
    result = store.dialplans().translate(dpid, number)
    if result is None:
        raise RoutingError(f"no rule of dialplan {dpid} matches {number!r}")
    return result


# -- blacklists --------------------------------------------------------------------------------

def add_blacklist(store: RoutingStore, list_name: str, prefix: str, exact: bool = False,
                  code: int = FILTERED_CODE, reason: str = FILTERED_REASON) -> BlacklistEntry:
    entry = BlacklistEntry(list_name, prefix, exact, code, reason)
    store.add_blacklist(entry)
    return entry


def delete_blacklist(store: RoutingStore, list_name: str, prefix: str, exact: bool = False) -> None:
    store.del_blacklist(list_name, prefix, exact)


def list_blacklist(store: RoutingStore, list_name: str | None = None) -> list[BlacklistEntry]:
    return store.list_blacklist(list_name)


def get_blacklist(store: RoutingStore, list_name: str, prefix: str, exact: bool = False) -> BlacklistEntry:
    what = f"number {prefix}" if exact else f"prefix {prefix!r}"
    return _one((e for e in store.list_blacklist(list_name) if e.prefix == prefix and e.exact == exact),
                f"{what} is not in blacklist {list_name}")


def test_blacklist(store: RoutingStore, list_name: str, number: str) -> BlacklistEntry | None:
    """The entry that blacklists ``number`` in ``list_name``, or None."""
    return store.snapshot().blacklisted(list_name, number)


# -- trusted sources ---------------------------------------------------------------------------

def add_trusted(store: RoutingStore, cidr: str, proto: str | None = None, tag: str = "") -> TrustedSource:
    source = TrustedSource(parse_network(cidr), proto, tag)
    store.add_trusted(source)
    return source


def delete_trusted(store: RoutingStore, cidr: str, proto: str | None = None) -> str:
    """The network no longer trusted, as stored (``10.0.0.1`` -> ``10.0.0.1/32``)."""
    network = str(parse_network(cidr))
    store.del_trusted(network, proto)
    return network


def list_trusted(store: RoutingStore) -> list[TrustedSource]:
    return store.list_trusted()


def get_trusted(store: RoutingStore, cidr: str, proto: str | None = None) -> TrustedSource:
    wanted = TrustedSource(parse_network(cidr), proto)
    return _one((s for s in store.list_trusted() if (s.cidr, s.proto) == (wanted.cidr, wanted.proto)),
                f"{wanted.cidr} ({wanted.proto or 'any'}) is not trusted")


# -- groups ------------------------------------------------------------------------------------

def add_to_group(store: RoutingStore, address: str, group: str) -> GroupMember:
    user, domain = _address(address)
    store.add_to_group(user, domain, group)
    return GroupMember(user, domain, group)


def remove_from_group(store: RoutingStore, address: str, group: str) -> GroupMember:
    user, domain = _address(address)
    store.remove_from_group(user, domain, group)
    return GroupMember(user, domain, group)


def list_group_members(store: RoutingStore, group: str | None = None) -> list[GroupMember]:
    return store.list_group_members(group)


def get_group_member(store: RoutingStore, address: str, group: str) -> GroupMember:
    user, domain = _address(address)
    return _one((m for m in store.list_group_members(group) if (m.username, m.domain) == (user, domain)),
                f"{user}@{domain} is not in group {group}")


def require_group(store: RoutingStore, prefix: str, group: str) -> str | None:
    """Destinations starting with ``prefix`` need ``group``; the group required before, if any."""
    return store.require_group(prefix, group)


def unrequire_group(store: RoutingStore, prefix: str) -> None:
    store.unrequire_group(prefix)


def list_group_requirements(store: RoutingStore, group: str | None = None) -> list[GroupRequirement]:
    return [r for r in store.list_group_requirements() if group is None or r.group == group]


def get_group_requirement(store: RoutingStore, prefix: str) -> GroupRequirement:
    return _one((r for r in store.list_group_requirements() if r.prefix == prefix),
                f"prefix {prefix!r} requires no group")


# -- forwarding and media destinations ---------------------------------------------------------

def set_forwarding(store: RoutingStore, address: str, targets: Mapping[Condition | str, str | None],
                   no_answer_timeout: int | None | object = UNSET) -> StoredForwarding | None:
    """Change the conditions named in ``targets`` (None or a CLEAR_WORDS word clears
    one; the others are kept) and, unless UNSET, the ring timeout (None: the default).
    Returns what is left (None: nothing)."""
    user, domain = _address(address)
    if not targets and no_answer_timeout is UNSET:
        raise RoutingError("nothing to set: give --always, --busy, --no-answer, --unavailable or --timeout")
    changes: dict[Condition | str, str | None] = {
        c: None if v is None or v.strip().lower() in CLEAR_WORDS else v for c, v in targets.items()}
    stored = store.set_forwarding(user, domain, changes, no_answer_timeout)
    return stored if stored.targets or stored.no_answer_timeout is not None else None


def clear_forwarding(store: RoutingStore, address: str) -> str:
    user, domain = _address(address)
    store.clear_forwarding(user, domain)
    return f"{user}@{domain}"


def find_forwarding(store: RoutingStore, address: str) -> tuple[StoredForwarding | None, ForwardingPrefs]:
    """The row as provisioned (None: nothing set) and where each condition goes,
    as the proxy resolves it."""
    user, domain = _address(address)
    return store.get_forwarding(user, domain), store.snapshot().forwarding(user, domain)


def get_forwarding(store: RoutingStore, address: str) -> tuple[StoredForwarding, ForwardingPrefs]:
    stored, prefs = find_forwarding(store, address)
    if stored is None:
        user, domain = _address(address)
        raise RoutingError(f"{user}@{domain} has no forwarding set")
    return stored, prefs


def list_forwarding(store: RoutingStore) -> list[StoredForwarding]:
    return store.list_forwarding()


def add_media(store: RoutingStore, name: str, uri: str) -> MediaDestination:
    media = MediaDestination(name, uri)
    store.add_media(media)
    return media


def delete_media(store: RoutingStore, name: str) -> None:
    store.del_media(name)


def list_media(store: RoutingStore) -> list[MediaDestination]:
    return store.list_media()


def get_media(store: RoutingStore, name: str) -> MediaDestination:
    return _one((m for m in store.list_media() if m.name == name), f"media destination {name} does not exist")


def _one(found, missing: str):
    item = next(iter(found), None)
    if item is None:
        raise RoutingError(missing)
    return item
