"""Where a SIP URI goes: RFC 3263 (NAPTR → SRV → A) over a DNS cache, sans I/O.

The core never waits on DNS.  ``Resolver.resolve`` answers from what it knows:
a numeric address or an /etc/hosts name at once, a cached answer while its TTL
lasts, else ``Pending`` after asking the edge (``query(name, rdtype, feed)``,
proxy/runtime/dns.py) for the first record it lacks.  Every answer fed back
re-runs the waiting lookups; each either finishes or asks for the next record
(NAPTR, then SRV, then A).  Answers are cached for their TTL clamped to
[min_ttl, max_ttl]; failures (NXDOMAIN, no data, SERVFAIL, timeout) for
``negative_ttl`` only, so a transient failure is retried soon.  The cache and
the queries in flight are bounded.

RFC 3263 §4 as applied (UDP and TCP only; no TLS, no IPv6 records):
* numeric host or /etc/hosts name: that address, the URI's port or 5060/5061;
* a port in the URI: A records of the host, transport from the URI (UDP);
* a transport parameter, no port: SRV ``_sip._<transport>.host``, else A, 5060;
* neither: NAPTR of the host (SIP+D2U, SIP+D2T; SIPS+D2T for sips), its SRV,
  else SRV ``_sip._udp`` then ``_sip._tcp``, else A with UDP and 5060.
SRV: the lowest priority, then the highest weight (deterministic, no
weighted-random spread); failover across SRV targets is not done.
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .ports import Target

Status = Literal["ok", "nxdomain", "nodata", "servfail", "timeout"]
RdType = Literal["NAPTR", "SRV", "A"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One DNS answer as the edge reports it; ``records`` by type:
    A: addresses; SRV: (priority, weight, port, target);
    NAPTR: (order, preference, flags, service, replacement)."""
    status: Status
    records: tuple = ()
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class Failure:
    """The URI's next hop cannot be resolved; ``transient``: SERVFAIL or timeout."""
    transient: bool


@dataclass(frozen=True, slots=True)
class Pending:
    """Resolution under way: ``Resolver.when_resolved`` gives the outcome."""
    uri: str = field(default="")


@dataclass(frozen=True, slots=True)
class _Need:
    name: str
    rdtype: RdType


Outcome = Target | Failure
Query = Callable[[str, RdType, Callable[[Answer], None]], None]

_NAPTR_SERVICES = {("sip", "SIP+D2U"): "udp", ("sip", "SIP+D2T"): "tcp", ("sips", "SIPS+D2T"): "tcp"}


def _normal(name: str) -> str:
    return name.strip().rstrip(".").lower()


class Resolver:
    def __init__(self, *, query: Query | None, now: Callable[[], float], hosts: dict[str, str] | None = None,
                 min_ttl: float = 5.0, max_ttl: float = 3600.0, negative_ttl: float = 5.0,
                 cache_size: int = 10000, max_in_flight: int = 1000):
        self.query = query                     # None: no DNS (hostnames do not resolve)
        self.now = now
        self.hosts = {_normal(k): v for k, v in (hosts or {}).items()}
        self.min_ttl, self.max_ttl, self.negative_ttl = min_ttl, max_ttl, negative_ttl
        self.cache_size = cache_size
        self.max_in_flight = max_in_flight
        self.cache: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self.in_flight: dict[tuple[str, str], list[Callable[[], None]]] = {}
        self.queries = 0                       # sent to the edge (a figure for tests and metrics)
        self._literal: dict[str, str | None] = {}   # host -> its address if numeric or in hosts
        self._fixed: dict[tuple, Target] = {}          # next hops that need no DNS, by URI parts

    # -- the lookup -----------------------------------------------------------------------
    def resolve(self, scheme: str, host: str, port: int | None, transport: str | None) -> Outcome | Pending:
        key = (scheme, host, port, transport)
        fixed = self._fixed.get(key)
        if fixed is not None:                  # numeric / hosts-file next hops: the hot path
            return fixed
        outcome = self._decide(scheme, host, port, transport)
        if isinstance(outcome, _Need):
            return Pending()
        if isinstance(outcome, Target) and self._numeric(_normal(host.strip("[]"))) is not None:
            if len(self._fixed) >= self.cache_size:
                self._fixed.clear()
            self._fixed[key] = outcome
        return outcome

    def when_resolved(self, scheme: str, host: str, port: int | None, transport: str | None,
                      fn: Callable[[Outcome], None]) -> None:
        """fn(outcome) now if it is known, else once DNS has answered."""
        outcome = self._decide(scheme, host, port, transport)
        if not isinstance(outcome, _Need):
            fn(outcome)
            return
        key = (outcome.name, outcome.rdtype)
        if key not in self.in_flight:
            if self.query is None or len(self.in_flight) >= self.max_in_flight:
                fn(Failure(transient=True))    # no resolver, or too many names at once
                return
            self.in_flight[key] = []
            self.queries += 1
            self.query(outcome.name, outcome.rdtype, lambda answer: self.feed(key, answer))
        self.in_flight[key].append(lambda: self.when_resolved(scheme, host, port, transport, fn))

    def feed(self, key: tuple[str, str], answer: Answer) -> None:
        """An answer from the edge: cache it, then re-run the lookups waiting for it."""
        if answer.status == "ok" and answer.records:
            ttl = min(max(float(answer.ttl), self.min_ttl), self.max_ttl)
        else:
            ttl = self.negative_ttl
        self.cache[key] = (self.now() + ttl, answer)
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        for waiter in self.in_flight.pop(key, []):
            waiter()

    # -- RFC 3263 as a pure function of the cache ---------------------------------------------
    def _decide(self, scheme: str, host: str, port: int | None, transport: str | None) -> Outcome | _Need:
        host = _normal(host.strip("[]"))
        secure = scheme == "sips"
        default_port = 5061 if secure else 5060
        transport = transport if transport in ("udp", "tcp") else None
        numeric = self._numeric(host)
        if numeric is not None:
            return Target(transport or "udp", numeric, port or default_port)
        if port is not None:
            return self._address(host, port, transport or ("tcp" if secure else "udp"))
        if transport is not None:
            found = self._srv(_srv_name(secure, transport, host), transport)
            if found is not None:
                return found
            return self._address(host, default_port, transport)
        naptr = self._get(host, "NAPTR")
        if isinstance(naptr, _Need):
            return naptr
        for replacement, naptr_transport in _naptr_choices(naptr, scheme):
            found = self._srv(replacement, naptr_transport)
            if found is not None:
                return found
        for srv_transport in (("tcp",) if secure else ("udp", "tcp")):
            found = self._srv(_srv_name(secure, srv_transport, host), srv_transport)
            if found is not None:
                return found
        return self._address(host, default_port, "tcp" if secure else "udp")

    def _srv(self, name: str, transport: str) -> Outcome | _Need | None:
        """The SRV target's address, a missing record, or None when the name has no SRV."""
        answer = self._get(name, "SRV")
        if isinstance(answer, _Need):
            return answer
        usable = sorted((r for r in answer.records if _normal(r[3])), key=lambda r: (r[0], -r[1]))
        if answer.status != "ok" or not usable:
            return None
        _, _, port, target = usable[0]
        return self._address(_normal(target), int(port), transport)

    def _address(self, host: str, port: int, transport: str) -> Outcome | _Need:
        numeric = self._numeric(host)
        if numeric is not None:
            return Target(transport, numeric, port)
        answer = self._get(host, "A")
        if isinstance(answer, _Need):
            return answer
        if answer.status == "ok" and answer.records:
            return Target(transport, answer.records[0], port)
        return Failure(transient=answer.status in ("servfail", "timeout"))

    def _numeric(self, host: str) -> str | None:
        """The address of a numeric host or /etc/hosts name (memoised: the hot path)."""
        if host in self._literal:
            return self._literal[host]
        try:
            ipaddress.ip_address(host)
            address: str | None = host
        except ValueError:
            address = self.hosts.get(host)
        if len(self._literal) >= self.cache_size:
            self._literal.clear()              # bounded: attacker-chosen hosts come and go
        self._literal[host] = address
        return address

    def _get(self, name: str, rdtype: RdType) -> Answer | _Need:
        key = (name, rdtype)
        cached = self.cache.get(key)
        if cached is not None:
            expires, answer = cached
            if expires > self.now():
                return answer
            del self.cache[key]
        return _Need(name, rdtype)


def _srv_name(secure: bool, transport: str, host: str) -> str:
    return f"_{'sips' if secure else 'sip'}._{transport}.{host}"


def _naptr_choices(answer: Answer, scheme: str) -> list[tuple[str, str]]:
    """(SRV name, transport) of the usable NAPTR records, best first (RFC 3263 §4.1)."""
    if answer.status != "ok":
        return []
    usable = []
    for order, preference, flags, service, replacement in answer.records:
        transport = _NAPTR_SERVICES.get((scheme, str(service).upper()))
        if transport is not None and str(flags).lower() == "s" and _normal(replacement):
            usable.append((order, preference, _normal(replacement), transport))
    return [(name, transport) for _, _, name, transport in sorted(usable)]
