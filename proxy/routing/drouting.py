"""Dynamic routing to PSTN gateways (OpenSIPS drouting), and blacklists.  Pure.

Gateways
    name, address (host, port, transport), strip N leading digits, a prefix to
    add, attributes and a probe mode (``never``: not health-checked, always
    usable; ``always``: OPTIONS every interval; ``when-down``: probed only once
    a call failure marked it down, until it answers again).

Carriers (gateway groups)
    a named ordered list of gateways, optionally weighted; a rule names one as
    ``#carrier`` in its gateway list.

Rules
    number prefix (longest match wins; "" matches every number), the routing
    groups they apply to (caller classes, "default" unless told), an optional
    time window (``08:00-18:00`` with weekdays ``1-5``, 1 = Monday, in the
    rule's time zone; a window may cross midnight and then belongs to the day
    it starts on), a priority (where rules of the same prefix overlap, the
    HIGHER priority wins, as in OpenSIPS) and an ordered gateway list with
    optional weights.

``select(number, group, at, call_key)`` returns the failover list of the best
rule: its gateways in order (or, when weighted, in a weighted random order
drawn from ``call_key``, so a retransmitted or re-run request gets the same
order), gateways marked down left out.  Only when every gateway of the best
rule is down does the next candidate rule (lower priority, then shorter
prefix) get its turn; an empty list means "no route".

Blacklists
    named lists of number prefixes (or exact numbers) that must never be
    routed; ``blacklisted(list, number)`` gives the longest matching entry with
    the status to answer (473 "Filtered Destination" unless set otherwise).
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .common import PrefixTable, RoutingError, check_attrs, check_name, check_prefix

__all__ = [
    "ProbeMode", "TRANSPORTS", "Gateway", "GatewayRef", "Carrier", "TimeWindow", "RouteRule", "Route",
    "DRouting", "BlacklistEntry", "Blacklists", "parse_address", "parse_gwlist", "format_gwlist",
    "parse_time_window", "DEFAULT_GROUP", "FILTERED_CODE", "FILTERED_REASON",
]

TRANSPORTS = ("udp", "tcp")            # what the runtime can send on
DEFAULT_GROUP = "default"
FILTERED_CODE = 473
FILTERED_REASON = "Filtered Destination"
MAX_STRIP = 32
MAX_WEIGHT = 1_000_000


class ProbeMode(str, Enum):
    NEVER = "never"
    ALWAYS = "always"
    WHEN_DOWN = "when-down"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str | "ProbeMode") -> "ProbeMode":
        try:
            return cls(str(text).lower())
        except ValueError:
            raise RoutingError(f"invalid probe mode {str(text)[:20]!r} (never, always or when-down)") from None


# -- gateways ---------------------------------------------------------------------------

_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")


def parse_address(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or None)."""
    value = (text or "").strip()
    host, port = value, None
    if value.startswith("["):
        end = value.find("]")
        if end > 0 and value[end + 1:].startswith(":"):
            host, port = value[:end + 1], value[end + 2:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    elif ":" in value:                       # a bare IPv6 address
        host = f"[{value}]"
    if not _HOST.match(host):
        raise RoutingError(f"invalid gateway address {text[:64]!r} (host[:port])")
    if port is None:
        return host.lower(), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RoutingError(f"invalid port in gateway address {text[:64]!r}")
    return host.lower(), int(port)


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    host: str
    port: int | None = None            # None: the transport's default (5060)
    transport: str = "udp"
    strip: int = 0                     # leading digits removed from the number
    prefix: str = ""                   # then put in front of it
    probe: ProbeMode = ProbeMode.NEVER
    attrs: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "gateway")
        host = self.host
        if host.count(":") > 1 and not host.startswith("["):
            host = f"[{host}]"                      # a bare IPv6 address
        host, port = parse_address(host if self.port is None else f"{host}:{self.port}")
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        transport = str(self.transport).lower()
        if transport not in TRANSPORTS:
            raise RoutingError(f"gateway {self.name}: transport must be one of {', '.join(TRANSPORTS)}")
        object.__setattr__(self, "transport", transport)
        if not isinstance(self.strip, int) or not 0 <= self.strip <= MAX_STRIP:
            raise RoutingError(f"gateway {self.name}: strip must be 0 to {MAX_STRIP} digits")
        check_prefix(self.prefix, f"prefix of gateway {self.name}")
        object.__setattr__(self, "probe", ProbeMode.parse(self.probe))
        check_attrs(self.attrs)

    @property
    def address(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def rewrite(self, number: str) -> str:
        """The number as this gateway wants it: ``strip`` digits off, ``prefix`` on."""
        return self.prefix + number[self.strip:]

    def uri(self, number: str | None = None) -> str:
        """The request URI for ``number`` (already rewritten), or the gateway's own
        URI (for OPTIONS probes) without one."""
        user = f"{number}@" if number else ""
        params = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{user}{self.address}{params}"


@dataclass(frozen=True, slots=True)
class GatewayRef:
    """One entry of a gateway list: a gateway, or ``#carrier``, with an optional weight."""
    name: str
    weight: int | None = None
    carrier: bool = False

    def __str__(self) -> str:
        text = f"#{self.name}" if self.carrier else self.name
        return text if self.weight is None else f"{text}={self.weight}"


def parse_gwlist(names: str | Iterable[str], weights: str | Iterable[int] | None = None, *,
                 carriers: bool = True, what: str = "gateway list") -> tuple[GatewayRef, ...]:
    """``gw1,gw2`` (+ weights ``70,30``), or the stored form ``gw1=70,#carrier=30``."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    if not items or not all(items):
        raise RoutingError(f"{what}: give gateway names separated by commas")
    refs = []
    for item in items:
        name, eq, weight = item.partition("=")
        carrier = name.startswith("#")
        if carrier:
            if not carriers:
                raise RoutingError(f"{what}: a carrier cannot contain a carrier ({name})")
            name = name[1:]
        check_name(name, "carrier" if carrier else "gateway")
        refs.append(GatewayRef(name, _weight(weight, what) if eq else None, carrier))
    if weights is not None:
        values = [w.strip() for w in weights.split(",")] if isinstance(weights, str) else list(weights)
        if len(values) != len(refs):
            raise RoutingError(f"{what}: {len(values)} weight(s) for {len(refs)} gateway(s)")
        if any(r.weight is not None for r in refs):
            raise RoutingError(f"{what}: weights given twice")
        refs = [GatewayRef(r.name, _weight(w, what), r.carrier) for r, w in zip(refs, values)]
    weighted = {r.weight is not None for r in refs}
    if len(weighted) > 1:
        raise RoutingError(f"{what}: give a weight for every gateway or for none")
    keys = [(r.carrier, r.name) for r in refs]
    if len(set(keys)) != len(keys):
        raise RoutingError(f"{what}: a gateway is listed twice")
    return tuple(refs)


def format_gwlist(refs: Iterable[GatewayRef]) -> str:
    return ",".join(str(r) for r in refs)


def _weight(value, what: str) -> int:
    try:
        weight = int(value)
    except (TypeError, ValueError):
        raise RoutingError(f"{what}: invalid weight {str(value)[:12]!r}") from None
    if not 0 <= weight <= MAX_WEIGHT:
        raise RoutingError(f"{what}: weights must be 0 to {MAX_WEIGHT}")
    return weight


@dataclass(frozen=True, slots=True)
class Carrier:
    name: str
    gateways: tuple[GatewayRef, ...]
    attrs: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "carrier")
        if not self.gateways or any(r.carrier for r in self.gateways):
            raise RoutingError(f"carrier {self.name}: give one or more gateways (not carriers)")
        check_attrs(self.attrs)


# -- time windows ---------------------------------------------------------------------------

_WEEKDAY_NAMES = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """``start``..``end`` minutes after local midnight (end exclusive; end < start
    crosses midnight) on ``weekdays`` (ISO 1 = Monday .. 7; empty = every day)."""
    start: int = 0
    end: int = 24 * 60
    weekdays: frozenset[int] = frozenset()
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not (0 <= self.start < 24 * 60 and 0 <= self.end <= 24 * 60 and self.start != self.end):
            raise RoutingError("time window must be HH:MM-HH:MM with two different times")
        object.__setattr__(self, "weekdays", frozenset(self.weekdays))
        if not self.weekdays <= set(range(1, 8)):
            raise RoutingError("weekdays are 1 (Monday) to 7 (Sunday)")
        _zone(self.tz)

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(_zone(self.tz))
        minute = local.hour * 60 + local.minute
        day = local.isoweekday()
        if self.start < self.end:
            inside = self.start <= minute < self.end
        elif minute >= self.start:
            inside = True
        elif minute < self.end:                  # the night part: it began yesterday
            inside, day = True, (day - 2) % 7 + 1
        else:
            inside = False
        return inside and (not self.weekdays or day in self.weekdays)

    @property
    def times(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    @property
    def days(self) -> str:
        return format_weekdays(self.weekdays)

    def __str__(self) -> str:
        days = f" days {self.days}" if self.weekdays else ""
        return f"{self.times}{days} {self.tz}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise RoutingError(f"unknown time zone {str(name)[:40]!r}") from None


def parse_time_window(times: str | None, weekdays: str | None = None, tz: str | None = None) -> TimeWindow | None:
    """``08:00-18:00`` and ``1-5`` / ``1,3,5`` / ``mon-fri``; None when neither is given."""
    if not times and not weekdays:
        if tz:
            _zone(tz)                          # a typo is refused even when unused
        return None
    start, end = 0, 24 * 60
    if times:
        first, sep, last = times.strip().partition("-")
        if not sep:
            raise RoutingError(f"invalid time window {times[:20]!r} (HH:MM-HH:MM)")
        start, end = _minutes(first), _minutes(last)
        if start == 24 * 60:
            raise RoutingError(f"invalid time window {times[:20]!r} (starts at 24:00)")
    return TimeWindow(start, end, parse_weekdays(weekdays) if weekdays else frozenset(), tz or "UTC")


def _minutes(text: str) -> int:
    m = _HHMM.match(text.strip())
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59 or (int(m.group(1)) == 24 and int(m.group(2))):
        raise RoutingError(f"invalid time {text.strip()[:10]!r} (HH:MM, 00:00 to 24:00)")
    return int(m.group(1)) * 60 + int(m.group(2))


def parse_weekdays(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().split(","):
        first, sep, last = part.strip().partition("-")
        a = _day(first)
        b = _day(last) if sep else a
        if b < a:
            raise RoutingError(f"invalid weekday range {part.strip()!r} (write 6-7,1 rather than 6-1)")
        days.update(range(a, b + 1))
    return frozenset(days)


def format_weekdays(days: Iterable[int]) -> str:
    days = sorted(days)
    parts, i = [], 0
    while i < len(days):
        j = i
        while j + 1 < len(days) and days[j + 1] == days[j] + 1:
            j += 1
        parts.append(str(days[i]) if i == j else f"{days[i]}-{days[j]}")
        i = j + 1
    return ",".join(parts)


def _day(text: str) -> int:
    text = text.strip()
    if text.isdigit() and 1 <= int(text) <= 7:
        return int(text)
    if text[:3] in _WEEKDAY_NAMES and len(text) >= 3:
        return _WEEKDAY_NAMES[text[:3]]
    raise RoutingError(f"invalid weekday {text[:12]!r} (1 = Monday .. 7 = Sunday, or mon..sun)")


# -- rules and selection ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RouteRule:
    prefix: str
    gateways: tuple[GatewayRef, ...]
    groups: frozenset[str] = frozenset({DEFAULT_GROUP})
    priority: int = 0
    window: TimeWindow | None = None
    attrs: str = ""
    id: int = 0

    def __post_init__(self) -> None:
        label = self.label
        check_prefix(self.prefix, f"{label}: prefix")
        if not self.gateways:
            raise RoutingError(f"{label}: no gateways")
        object.__setattr__(self, "groups", frozenset(self.groups))
        if not self.groups:
            raise RoutingError(f"{label}: no routing group")
        for group in self.groups:
            check_name(group, "routing group")
        if not isinstance(self.priority, int):
            raise RoutingError(f"{label}: priority must be a whole number")
        check_attrs(self.attrs)

    @property
    def label(self) -> str:
        return f"route #{self.id}" if self.id else "route"

    def active(self, at: datetime | None) -> bool:
        return self.window is None or (at is not None and self.window.contains(at))


@dataclass(frozen=True, slots=True)
class Route:
    """One failover step: send to ``gateway`` with request URI ``uri``."""
    gateway: Gateway
    number: str              # the dialled number as the gateway wants it (strip/prefix applied)
    uri: str                 # sip:<number>@<gateway address>[;transport=...]
    rule: RouteRule
    carrier: str | None = None


class DRouting:
    """Gateways, carriers and rules, checked against each other once."""

    __slots__ = ("gateways", "carriers", "rules", "_table", "_by_host")

    def __init__(self, gateways: Iterable[Gateway] = (), carriers: Iterable[Carrier] = (),
                 rules: Iterable[RouteRule] = ()):
        self.gateways: Mapping[str, Gateway] = MappingProxyType({g.name: g for g in gateways})
        self.carriers: Mapping[str, Carrier] = MappingProxyType({c.name: c for c in carriers})
        for carrier in self.carriers.values():
            for ref in carrier.gateways:
                if ref.name not in self.gateways:
                    raise RoutingError(f"carrier {carrier.name}: unknown gateway {ref.name}")
        ordered = sorted(rules, key=lambda r: (-r.priority, r.id))
        for rule in ordered:
            for ref in rule.gateways:
                known = self.carriers if ref.carrier else self.gateways
                if ref.name not in known:
                    kind = "carrier" if ref.carrier else "gateway"
                    raise RoutingError(f"{rule.label}: unknown {kind} {ref.name}")
        self.rules: tuple[RouteRule, ...] = tuple(sorted(ordered, key=lambda r: r.id))
        self._table: PrefixTable[RouteRule] = PrefixTable((r.prefix, r) for r in ordered)
        by_host: dict[str, list[Gateway]] = {}
        for g in self.gateways.values():
            by_host.setdefault(g.host.strip("[]"), []).append(g)
        self._by_host = {h: tuple(g) for h, g in by_host.items()}

    def candidates(self, number: str, group: str, at: datetime | None) -> list[RouteRule]:
        """Rules that apply: longest prefix first, then higher priority, then older."""
        return [rule for _, rules in self._table.matches(number) for rule in rules
                if group in rule.groups and rule.active(at)]

    def select(self, number: str, group: str = DEFAULT_GROUP, at: datetime | float | None = None,
               call_key: str = "", is_up: Callable[[str], bool] | None = None) -> list[Route]:
        """do_routing: the ordered failover list for ``number`` (empty: no route).

        ``at`` is an aware datetime or a Unix time (required for rules with a
        time window; None counts as "matches no window").  ``is_up(name)``
        says whether a gateway may be used (the prober's view); None = all."""
        when = _instant(at)
        for rule in self.candidates(number, group, when):
            routes = self._routes(rule, number, call_key, is_up)
            if routes:
                return routes
        return []

    def _routes(self, rule: RouteRule, number: str, call_key: str,
                is_up: Callable[[str], bool] | None) -> list[Route]:
        routes: list[Route] = []
        seen: set[str] = set()
        for ref in _ordered(rule.gateways, call_key, f"rule{rule.id}"):
            if ref.carrier:
                carrier = self.carriers[ref.name]
                members: list[tuple[GatewayRef, str | None]] = [(m, carrier.name) for m in _ordered(carrier.gateways, call_key, f"#{carrier.name}")]
            else:
                members = [(ref, None)]
            for member, carrier_name in members:
                gateway = self.gateways[member.name]
                if gateway.name in seen or (is_up is not None and not is_up(gateway.name)):
                    continue
                seen.add(gateway.name)
                rewritten = gateway.rewrite(number)
                routes.append(Route(gateway, rewritten, gateway.uri(rewritten), rule, carrier_name))
        return routes

    def from_gateway(self, host: str, port: int | None = None) -> Gateway | None:
        """is_from_gw: the gateway a request came from (by source address)."""
        for gateway in self._by_host.get(host.strip("[]").lower(), ()):
            if port is None or gateway.port in (None, port):
                return gateway
        return None


def _instant(at: datetime | float | None) -> datetime | None:
    if at is None:
        return None
    if isinstance(at, datetime):
        return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(at), tz=timezone.utc)


def _ordered(refs: tuple[GatewayRef, ...], call_key: str, salt: str) -> list[GatewayRef]:
    """The list order, or for a weighted list a weighted random permutation drawn
    from ``call_key`` (Efraimidis-Spirakis: sort by u^(1/w)); weight 0 = last resort."""
    if not refs or refs[0].weight is None:
        return list(refs)
    keyed = []
    for index, ref in enumerate(refs):
        if ref.weight:
            digest = hashlib.blake2b(f"{call_key}\0{salt}\0{ref}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
            u = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)          # in (0, 1)
            keyed.append((0, -math.log(u) / ref.weight, index, ref))
        else:
            keyed.append((1, 0.0, index, ref))
    return [ref for *_, ref in sorted(keyed)]


# -- blacklists --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BlacklistEntry:
    list: str
    prefix: str
    exact: bool = False                 # the whole number, not a prefix
    code: int = FILTERED_CODE
    reason: str = FILTERED_REASON

    def __post_init__(self) -> None:
        check_name(self.list, "blacklist")
        check_prefix(self.prefix, f"blacklist {self.list} entry")
        if self.exact and not self.prefix:
            raise RoutingError(f"blacklist {self.list}: an exact entry needs a number")
        if not isinstance(self.code, int) or not 400 <= self.code <= 699:
            raise RoutingError(f"blacklist {self.list}: status must be 400 to 699")
        if not self.reason or len(self.reason) > 120 or any(c in self.reason for c in "\r\n\0"):
            raise RoutingError(f"blacklist {self.list}: reason must be one line of 1 to 120 characters")

    def matches(self, number: str) -> bool:
        return number == self.prefix if self.exact else number.startswith(self.prefix)


class Blacklists:
    __slots__ = ("_lists",)

    def __init__(self, entries: Iterable[BlacklistEntry] = ()):
        by_list: dict[str, list[BlacklistEntry]] = {}
        for entry in entries:
            by_list.setdefault(entry.list, []).append(entry)
        self._lists = {name: PrefixTable((e.prefix, e) for e in items) for name, items in by_list.items()}

    @property
    def names(self) -> list[str]:
        return sorted(self._lists)

    def __len__(self) -> int:
        return sum(len(t) for t in self._lists.values())

    def blacklisted(self, name: str, number: str) -> BlacklistEntry | None:
        """The longest entry of list ``name`` covering ``number``, or None (also
        for a list that does not exist: an empty list blocks nothing)."""
        table = self._lists.get(name)
        if table is None:
            return None
        for _, entries in table.matches(number):
            for entry in sorted(entries, key=lambda e: not e.exact):
                if entry.matches(number):
                    return entry
        return None
