"""Operator commands, opensipsctl-style: ``user``, ``domain`` and ``alias`` sub-apps.

The main CLI mounts these apps and sets ``ctx.obj.provisioning_url``.  Each
command is thin: it opens the store (creating any missing tables, so a fresh
data dir just works), calls the service layer (proxy/provisioning/service.py,
which ``/v1/users|domains|aliases`` call too) and prints one line; errors go
to stderr as one line with exit status 1.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Optional, TypeVar, overload

import typer
from rich.table import Table

from proxy.infra.cli import fail, opened, print_rows, print_table
from proxy.infra.sqldb import SqlStore

from . import service
from .models import ProvisioningError, parse_address
from .store import ProvisioningStore

__all__ = ["user_app", "domain_app", "alias_app", "open_store", "address_arg"]

S = TypeVar("S", bound=SqlStore)

user_app = typer.Typer(help="Subscribers (user@domain) and their passwords.", no_args_is_help=True)
domain_app = typer.Typer(help="Domains this proxy serves.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases: extra addresses (numbers, other domains) for a subscriber.",
                        no_args_is_help=True)


@overload
def open_store(ctx: typer.Context) -> AbstractContextManager[ProvisioningStore]: ...
@overload
def open_store(ctx: typer.Context, store_class: type[S]) -> AbstractContextManager[S]: ...


def open_store(ctx: typer.Context, store_class: type[SqlStore] = ProvisioningStore) -> AbstractContextManager[SqlStore]:
    """A store on the provisioning database (``store_class``: any SqlStore kept
    there, e.g. the routing store), its tables created; errors end the command."""
    return _opened(ctx, store_class)


def _opened(ctx: typer.Context, store_class: type[S]) -> AbstractContextManager[S]:
    url = getattr(ctx.obj, "provisioning_url", None)
    if not url:
        fail("no provisioning database configured")
    return opened(store_class, url, also=(ProvisioningError,))


def address_arg(text: str) -> tuple[str, str]:
    try:
        return parse_address(text)
    except ProvisioningError as exc:
        fail(str(exc))


# -- user ------------------------------------------------------------------------

@user_app.command("add")
def user_add(
    ctx: typer.Context,
    address: str = typer.Argument(..., metavar="USER@DOMAIN"),
    password: Optional[str] = typer.Option(None, "--password", "-p", help="The SIP password."),
    ha1_only: bool = typer.Option(False, "--ha1-only",
                                  help="Store only the HA1 hashes (MD5, SHA-256), not the password."),
    ha1: Optional[str] = typer.Option(None, "--ha1", metavar="HASH",
                                      help="Import an existing MD5 HA1 instead of a password."),
) -> None:
    """Add a subscriber."""
    with open_store(ctx) as store:
        entry = service.add_user(store, address, password, ha1_only=ha1_only, ha1=ha1)
    typer.echo(f"added user {entry.address}")


@user_app.command("del")
def user_del(ctx: typer.Context, address: str = typer.Argument(..., metavar="USER@DOMAIN")) -> None:
    """Delete a subscriber (and the aliases pointing at it)."""
    with open_store(ctx) as store:
        deleted, aliases = service.delete_user(store, address)
    extra = f" and {aliases} alias(es)" if aliases else ""
    typer.echo(f"deleted user {deleted}{extra}")


@user_app.command("passwd")
def user_passwd(
    ctx: typer.Context,
    address: str = typer.Argument(..., metavar="USER@DOMAIN"),
    password: str = typer.Argument(..., metavar="NEWPASS"),
    ha1_only: bool = typer.Option(False, "--ha1-only", help="From now on store only the HA1 hashes."),
) -> None:
    """Change a subscriber's password (the storage choice is kept)."""
    with open_store(ctx) as store:
        entry = service.set_password(store, address, password, ha1_only=True if ha1_only else None)
    typer.echo(f"password changed for {entry.address}")


@user_app.command("list")
def user_list(ctx: typer.Context,
              domain: Optional[str] = typer.Option(None, "--domain", "-d", help="Only this domain.")) -> None:
    """List subscribers (passwords are never shown)."""
    with open_store(ctx) as store:
        users = service.list_users(store, domain)
    table = Table("user", "domain", "stored as", "created")
    for u in users:
        created = u.created_at.strftime("%Y-%m-%d %H:%M:%S") if u.created_at else ""
        table.add_row(u.username, u.domain, u.storage, created)
    print_table(table)


# -- domain ----------------------------------------------------------------------

@domain_app.command("add")
def domain_add(ctx: typer.Context, domain: str) -> None:
    """Serve a domain."""
    with open_store(ctx) as store:
        name = service.add_domain(store, domain)
    typer.echo(f"added domain {name}")


@domain_app.command("del")
def domain_del(ctx: typer.Context, domain: str) -> None:
    """Stop serving a domain (it must have no users or aliases left)."""
    with open_store(ctx) as store:
        name = service.delete_domain(store, domain)
    typer.echo(f"deleted domain {name}")


@domain_app.command("list")
def domain_list(ctx: typer.Context) -> None:
    """List served domains."""
    with open_store(ctx) as store:
        domains = service.list_domains(store)
    print_rows(("domain",),
               ((d,) for d in domains))


# -- alias -----------------------------------------------------------------------

@alias_app.command("add")
def alias_add(ctx: typer.Context,
              alias: str = typer.Argument(..., metavar="ALIAS@DOMAIN"),
              target: str = typer.Argument(..., metavar="USER@DOMAIN")) -> None:
    """Make ALIAS@DOMAIN reach the subscriber USER@DOMAIN."""
    with open_store(ctx) as store:
        entry = service.add_alias(store, alias, target)
    typer.echo(f"added alias {entry.alias} -> {entry.target}")


@alias_app.command("del")
def alias_del(ctx: typer.Context, alias: str = typer.Argument(..., metavar="ALIAS@DOMAIN")) -> None:
    """Delete an alias."""
    with open_store(ctx) as store:
        deleted = service.delete_alias(store, alias)
    typer.echo(f"deleted alias {deleted}")


@alias_app.command("list")
def alias_list(ctx: typer.Context) -> None:
    """List aliases."""
    with open_store(ctx) as store:
        aliases = service.list_aliases(store)
    print_rows(("alias", "user"),
               ((a.alias, a.target) for a in aliases))
