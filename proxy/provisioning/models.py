"""Provisioning data as the proxy sees it: plain immutable values, no database.

The hot path (authentication, "is this domain ours?", alias resolution) reads a
``ProvisioningSnapshot`` built once per change, so a request never waits on SQL.
This module deliberately imports nothing from SQLAlchemy: the digest code and
the routing logic depend on these types, not on the store.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

__all__ = [
    "ProvisioningError", "Credentials", "ProvisioningSnapshot", "UserEntry", "AliasEntry",
    "parse_address", "normalize_domain", "check_username",
]


class ProvisioningError(Exception):
    """A provisioning request that cannot be done, worded as one line for the operator."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What digest authentication may use for one subscriber.

    ``password`` is None when the operator chose to keep only hashes; the HA1
    values are hex digests of ``username:realm:password`` with realm = domain.
    """
    username: str
    domain: str
    password: str | None
    ha1_md5: str | None
    ha1_sha256: str | None


@dataclass(frozen=True, slots=True)
class UserEntry:
    """A subscriber as listed to an operator: never the secret itself."""
    username: str
    domain: str
    storage: str            # "plaintext", "ha1" (both hashes) or "ha1-md5" (imported MD5 HA1)
    created_at: datetime | None

    @property
    def address(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True, slots=True)
class AliasEntry:
    alias_username: str
    alias_domain: str
    username: str
    domain: str

    @property
    def alias(self) -> str:
        return f"{self.alias_username}@{self.alias_domain}"

    @property
    def target(self) -> str:
        return f"{self.username}@{self.domain}"


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(d)


@dataclass(frozen=True)
class ProvisioningSnapshot:
    """An immutable, consistent view of the provisioning tables at ``version``.

    Keys are ``(username, domain)`` with the domain lower-cased; usernames are
    case-sensitive, as the user part of a SIP URI is (RFC 3261 §19.1.4).
    """
    version: int = 0
    domains: frozenset[str] = frozenset()
    users: Mapping[tuple[str, str], Credentials] = field(default_factory=lambda: _frozen({}))
    aliases: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=lambda: _frozen({}))
    fraud_rules: tuple = ()         # proxy.core.fraud.FraudRule, every profile (docs/fraud.md)

    def __post_init__(self) -> None:
        # callers may hand in plain dicts; the snapshot is shared by every
        # request, so make sure nobody can mutate it afterwards
        if not isinstance(self.users, MappingProxyType):
            object.__setattr__(self, "users", _frozen(dict(self.users)))
        if not isinstance(self.aliases, MappingProxyType):
            object.__setattr__(self, "aliases", _frozen(dict(self.aliases)))

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def credentials(self, username: str, domain: str) -> Credentials | None:
        """Digest lookup: the subscriber itself, never through an alias (a UA
        authenticates with its real username)."""
        return self.users.get((username, domain.lower()))

    def resolve(self, username: str, domain: str) -> tuple[str, str] | None:
        """The subscriber ``(username, domain)`` an address reaches, following
        an alias; None when the address is neither a subscriber nor an alias."""
        key = (username, domain.lower())
        if key in self.users:
            return key
        return self.aliases.get(key)


# -- address syntax --------------------------------------------------------------

# RFC 3261 §25.1 user = 1*( unreserved / escaped / user-unreserved )
_USER = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_IPV6_REF = re.compile(r"^\[[0-9a-f:.]+\]$")


def check_username(username: str) -> str:
    if not username or not _USER.match(username):
        raise ProvisioningError(f"invalid user name {username[:64]!r}")
    return username


def normalize_domain(domain: str) -> str:
    """Lower-cased host name / IP literal; ports are not part of a SIP domain."""
    d = domain.strip().lower()
    if _IPV4.match(d):
        if all(int(p) <= 255 for p in d.split(".")):
            return d
    elif _IPV6_REF.match(d) or (len(d) <= 253 and _HOSTNAME.match(d)):
        return d.rstrip(".")
    raise ProvisioningError(f"invalid domain {domain[:64]!r}")


def parse_address(text: str) -> tuple[str, str]:
    """``alice@example.test`` (``sip:`` prefix tolerated) → ("alice", "example.test")."""
    value = text.strip()
    if value[:4].lower() == "sip:":
        value = value[4:]
    user, at, domain = value.rpartition("@")
    if not at or not user or not domain:
        raise ProvisioningError(f"expected user@domain, got {text[:64]!r}")
    return check_username(user), normalize_domain(domain)
