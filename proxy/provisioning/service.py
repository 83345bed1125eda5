"""Subscribers, domains and aliases: the one service layer `sipledger user|domain|alias`
and ``/v1/users|domains|aliases`` both call (docs/provisioning.md).

Why a layer of its own: the rules (address syntax, "the domain must be
served", "an alias never shadows a user"...) used to be reached only
through the typer commands; the REST routes need exactly the same rules and
the same one-line refusals.  Every function takes an open store and text as
an operator types it, and raises only ``ProvisioningError`` (one line, the
message the CLI prints after ``error:``).  The store writes the SQL and bumps
the change log in the same transaction, so running proxies pick the change up
at their next poll, whoever made it.
"""
from __future__ import annotations

from .models import AliasEntry, ProvisioningError, UserEntry, normalize_domain, parse_address
from .store import ProvisioningStore

__all__ = ["add_user", "delete_user", "set_password", "list_users", "get_user",
           "add_domain", "delete_domain", "list_domains", "get_domain",
           "add_alias", "delete_alias", "list_aliases", "get_alias"]


# -- subscribers -------------------------------------------------------------------------

def add_user(store: ProvisioningStore, address: str, password: str | None = None, *,
             ha1_only: bool = False, ha1: str | None = None) -> UserEntry:
    user, domain = parse_address(address)
    store.add_user(user, domain, password, ha1_only=ha1_only, ha1=ha1)
    return get_user(store, f"{user}@{domain}")


def delete_user(store: ProvisioningStore, address: str) -> tuple[str, int]:
    """(the address, how many aliases pointing at it went too)."""
    user, domain = parse_address(address)
    return f"{user}@{domain}", store.del_user(user, domain)


def set_password(store: ProvisioningStore, address: str, password: str, *,
                 ha1_only: bool | None = None) -> UserEntry:
    """``ha1_only`` None keeps the storage choice (clear or hashes only)."""
    user, domain = parse_address(address)
    store.set_password(user, domain, password, ha1_only=ha1_only)
    return get_user(store, f"{user}@{domain}")


def list_users(store: ProvisioningStore, domain: str | None = None) -> list[UserEntry]:
    return store.list_users(domain)


def get_user(store: ProvisioningStore, address: str) -> UserEntry:
    user, domain = parse_address(address)
    for entry in store.list_users(domain):
        if entry.username == user:
            return entry
    raise ProvisioningError(f"user {user}@{domain} does not exist")


# -- domains ------------------------------------------------------------------------------

def add_domain(store: ProvisioningStore, domain: str) -> str:
    store.add_domain(domain)
    return normalize_domain(domain)


def delete_domain(store: ProvisioningStore, domain: str) -> str:
    store.del_domain(domain)
    return normalize_domain(domain)


def list_domains(store: ProvisioningStore) -> list[str]:
    return store.list_domains()


def get_domain(store: ProvisioningStore, domain: str) -> str:
    name = normalize_domain(domain)
    if name not in store.list_domains():
        raise ProvisioningError(f"domain {name} does not exist")
    return name


# -- aliases -----------------------------------------------------------------------------

def add_alias(store: ProvisioningStore, alias: str, target: str) -> AliasEntry:
    alias_user, alias_domain = parse_address(alias)
    user, domain = parse_address(target)
    store.add_alias(alias_user, alias_domain, user, domain)
    return AliasEntry(alias_user, alias_domain, user, domain)


def delete_alias(store: ProvisioningStore, alias: str) -> str:
    alias_user, alias_domain = parse_address(alias)
    store.del_alias(alias_user, alias_domain)
    return f"{alias_user}@{alias_domain}"


def list_aliases(store: ProvisioningStore) -> list[AliasEntry]:
    return store.list_aliases()


def get_alias(store: ProvisioningStore, alias: str) -> AliasEntry:
    alias_user, alias_domain = parse_address(alias)
    for entry in store.list_aliases():
        if (entry.alias_username, entry.alias_domain) == (alias_user, alias_domain):
            return entry
    raise ProvisioningError(f"alias {alias_user}@{alias_domain} does not exist")
