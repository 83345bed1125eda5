"""``sipledger auth``: the password-guessing lockouts every worker shares.

A worker that sees too many failed password checks from a source (or for a
user) locks it (proxy/core/lockout.py) and writes the lock to the provisioning
database; ``lockouts`` lists what is locked, ``unlock`` ends a lock early: every
worker drops it at its next reload (``provisioning.reload_seconds``).
"""
from __future__ import annotations

import ipaddress
import time
from datetime import datetime, timezone

import typer

from proxy.core.lockout import ip_key
from proxy.infra.cli import fail, print_rows

from .cli import address_arg, open_store

__all__ = ["auth_app"]

auth_app = typer.Typer(help="Authentication lockouts (password guessing).", no_args_is_help=True)


@auth_app.command("lockouts")
def lockouts(ctx: typer.Context) -> None:
    """List the sources and users locked out for failed password checks."""
    now = time.time()
    with open_store(ctx) as store:
        entries = store.lockouts(now)
    print_rows(("locked", "until (UTC)", "seconds left", "after failures"), (
        (e.key, datetime.fromtimestamp(e.until, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
         str(int(e.until - now)), str(e.failures)) for e in entries))


@auth_app.command("unlock")
def unlock(ctx: typer.Context,
           target: str = typer.Argument(..., help="A source address (192.0.2.10), a user "
                                                  "(alice@example.test), or a key as listed.")) -> None:
    """End a lockout now, on every worker."""
    key = _key(target.strip())
    with open_store(ctx) as store:
        if not store.unlock(key):
            fail(f"{key} is not locked")
    typer.echo(f"unlocked {key}")


def _key(target: str) -> str:
    if target.startswith(("ip:", "user:")):
        return target
    try:
        return ip_key(str(ipaddress.ip_address(target)))
    except ValueError:
        user, domain = address_arg(target)
        return f"user:{user}@{domain}"
