"""Permissions (trusted sources) and groups (OpenSIPS permissions + group modules).  Pure.

Trusted sources
    address / subnet, optionally one transport, optionally a tag: requests
    from them (typically the PSTN gateways calling in) are not challenged.
    ``is_trusted(ip, transport)`` returns the most specific matching entry.

Groups
    ``user@domain`` belongs to named groups; destinations can require one:
    the longest matching prefix decides ("00" needs "international", "0"
    needs "pstn": 0049... needs only "international"), so
    ``allowed(user, domain, number)`` -> (allowed?, the group required or None).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .common import PrefixTable, RoutingError, check_attrs, check_name, check_prefix
from .drouting import TRANSPORTS

__all__ = ["TrustedSource", "TrustedSources", "GroupRequirement", "Groups", "parse_network"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> IPNetwork:
    """``192.0.2.10``, ``192.0.2.0/24``, ``2001:db8::/32`` (host bits must be zero)."""
    value = (text or "").strip()
    try:
        return ipaddress.ip_network(value.strip("[]") if "/" not in value else value, strict=True)
    except ValueError as exc:
        raise RoutingError(f"invalid address or subnet {value[:50]!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TrustedSource:
    network: IPNetwork
    proto: str | None = None            # None: any transport
    tag: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.network, str):
            object.__setattr__(self, "network", parse_network(self.network))
        if self.proto is not None:
            proto: str | None = self.proto.lower()
            if proto in ("", "any"):
                proto = None
            elif proto not in TRANSPORTS:
                raise RoutingError(f"invalid protocol {self.proto[:10]!r} ({', '.join(TRANSPORTS)} or any)")
            object.__setattr__(self, "proto", proto)
        check_attrs(self.tag)

    @property
    def cidr(self) -> str:
        return str(self.network)


class TrustedSources:
    """Lookup by masking the address once per distinct prefix length."""

    __slots__ = ("entries", "_tables")

    def __init__(self, entries: Iterable[TrustedSource] = ()):
        self.entries = tuple(entries)
        tables: dict[tuple[int, int], dict[int, list[TrustedSource]]] = {}
        for entry in self.entries:
            net = entry.network
            tables.setdefault((net.version, net.prefixlen), {}) \
                .setdefault(int(net.network_address), []).append(entry)
        # most specific first
        self._tables = sorted(((v, plen, table) for (v, plen), table in tables.items()),
                              key=lambda t: -t[1])

    def __len__(self) -> int:
        return len(self.entries)

    def is_trusted(self, ip: str, transport: str | None = None) -> TrustedSource | None:
        """The most specific entry covering ``ip`` for ``transport`` (None: any
        entry regardless of its protocol), or None."""
        if not self._tables:
            return None
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return None
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        bits = addr.max_prefixlen
        value = int(addr)
        proto = transport.lower() if transport else None
        for version, plen, table in self._tables:
            if version != addr.version:
                continue
            shift = bits - plen
            for entry in table.get((value >> shift) << shift, ()):
                if entry.proto is None or proto is None or entry.proto == proto:
                    return entry
        return None


@dataclass(frozen=True, slots=True)
class GroupRequirement:
    prefix: str
    group: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix, "destination prefix")
        check_name(self.group, "group")


class Groups:
    __slots__ = ("_members", "_required", "requirements")

    def __init__(self, members: Iterable[tuple[str, str, str]] = (),
                 requirements: Iterable[GroupRequirement] = ()):
        by_user: dict[tuple[str, str], set[str]] = {}
        for user, domain, group in members:
            by_user.setdefault((user, domain.lower()), set()).add(group)
        self._members = {k: frozenset(v) for k, v in by_user.items()}
        self.requirements = tuple(requirements)
        prefixes = [r.prefix for r in self.requirements]
        if len(set(prefixes)) != len(prefixes):
            raise RoutingError("a destination prefix requires two groups")
        self._required: PrefixTable[GroupRequirement] = PrefixTable((r.prefix, r) for r in self.requirements)

    def __len__(self) -> int:
        return sum(len(g) for g in self._members.values())

    def groups_of(self, user: str, domain: str) -> frozenset[str]:
        return self._members.get((user, domain.lower()), frozenset())

    def in_group(self, user: str, domain: str, group: str) -> bool:
        """is_user_in: membership of ``user@domain`` (user case-sensitive, domain not)."""
        return group in self.groups_of(user, domain)

    def required_group(self, number: str) -> str | None:
        found = self._required.longest(number)
        return found[1][0].group if found else None

    def allowed(self, user: str | None, domain: str | None, number: str) -> tuple[bool, str | None]:
        """(True, None) when no group is required for ``number``; else whether
        the user is in the required group, and that group (for the 403 reason).
        ``user`` None (not authenticated) is in no group."""
        group = self.required_group(number)
        if group is None:
            return True, None
        if user is None or domain is None:
            return False, group
        return self.in_group(user, domain, group), group
