"""API tokens: bearer tokens for the REST API, stored hashed.

A token is ``slt_`` + 43 random URL-safe characters (256 bits), shown once by
``sipledger token create``; the store keeps only its SHA-256 (a high-entropy
secret needs no slow hash), a short public id (for ``list`` / ``revoke``),
the role and, for ``account`` tokens, the account they are limited to.

* ``admin``: sees every CDR and every statistic.
* ``account``: sees only CDRs whose ``account`` is the token's account
  (authenticated ``user@domain``).

SQLite under the data dir (``api_tokens.sqlite``) by default, through the
product's ``SqlStore`` (WAL, busy timeout): the CLI writes while the API
process reads, and a revocation is seen by the very next request.

The store's ``create`` / ``list`` / ``get`` / ``revoke`` are the token service:
`sipledger token ...` and ``/v1/tokens`` call them alike.  What they refuse
(a bad role, an unknown id) is a ``TokenRefused``, one line; any other
``TokenError`` is the store itself failing.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, cast

import typer
from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, select, update

from proxy.infra.cli import fail
from proxy.infra.sqldb import SqlStore, change_log_table, sqlite_url, utcnow

__all__ = ["TokenError", "TokenRefused", "TokenInfo", "TokenStore", "default_url", "hash_token", "token_app"]

DB_NAME = "api_tokens.sqlite"
PREFIX = "slt_"
Role = Literal["admin", "account"]
ROLES: tuple[str, ...] = ("admin", "account")

metadata = MetaData()
token_table = Table(
    "api_token", metadata,
    Column("id", String(16), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("account", String(255), nullable=False),      # "" for admin tokens
    Column("name", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
_change_log = change_log_table(metadata, "api_token_change_log")


class TokenError(Exception):
    """A token store problem, worded as one line."""


class TokenRefused(TokenError):
    """A token request the rules refuse (bad role or account, unknown id): the
    caller's mistake, not the store's."""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    role: Role
    account: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def default_url(data_dir: str | os.PathLike) -> str:
    return sqlite_url(Path(data_dir) / DB_NAME)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row) -> TokenInfo:
    return TokenInfo(id=row.id, role=row.role, account=row.account, name=row.name,
                     created_at=row.created_at, revoked_at=row.revoked_at)


class TokenStore(SqlStore):
    error = TokenError
    what = "API token"
    change_log = _change_log
    metadata = metadata


    def create(self, role: str, account: str = "", name: str = "") -> tuple[TokenInfo, str]:
        """A new token: (its record, the token itself — shown once, never stored)."""
        if role not in ROLES:
            raise TokenRefused(f"role must be one of {', '.join(ROLES)}, not {role[:20]!r}")
        account = account.strip()
        if role == "account" and not account:
            raise TokenRefused("an account token needs --account (the user@domain it may see)")
        if role == "admin" and account:
            raise TokenRefused("an admin token sees every account: drop --account")
        if len(account) > 255 or len(name) > 255:
            raise TokenRefused("account and name are at most 255 characters")
        token = PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(id=secrets.token_hex(6), role=cast(Role, role), account=account, name=name,
                         created_at=utcnow())
        with self._write() as conn:
            conn.execute(insert(token_table).values(
                id=info.id, token_sha256=hash_token(token), role=info.role, account=info.account,
                name=info.name, created_at=info.created_at))
        return info, token

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        query = select(token_table).order_by(token_table.c.created_at, token_table.c.id)
        if not include_revoked:
            query = query.where(token_table.c.revoked_at.is_(None))
        with self._read() as conn:
            return [_info(row) for row in conn.execute(query)]

    def get(self, token_id: str) -> TokenInfo:
        with self._read() as conn:
            row = conn.execute(select(token_table).where(token_table.c.id == token_id)).first()
        if row is None:
            raise TokenRefused(f"no token with id {token_id[:20]!r}")
        return _info(row)

    def revoke(self, token_id: str) -> TokenInfo:
        with self._write() as conn:
            row = conn.execute(select(token_table).where(token_table.c.id == token_id)).first()
            if row is None:
                raise TokenRefused(f"no token with id {token_id[:20]!r}")
            if row.revoked_at is None:
                conn.execute(update(token_table).where(token_table.c.id == token_id)
                             .values(revoked_at=utcnow()))
        return _info(row)

    def authenticate(self, token: str) -> TokenInfo | None:
        """The live token's record, or None (unknown, malformed or revoked)."""
        if not token.startswith(PREFIX) or len(token) > 128:
            return None
        with self._read() as conn:
            row = conn.execute(select(token_table).where(
                token_table.c.token_sha256 == hash_token(token),
                token_table.c.revoked_at.is_(None))).first()
        return _info(row) if row is not None else None


def open_store(data_dir: str | os.PathLike, url: str | None = None) -> TokenStore:
    store = TokenStore(url or default_url(data_dir))
    store.create_schema()
    return store


# -- `sipledger token ...` -----------------------------------------------------------

token_app = typer.Typer(help="API tokens for the REST API (Bearer authentication).",
                        no_args_is_help=True)


def _open(ctx: typer.Context) -> TokenStore:
    data_dir = getattr(ctx.obj, "data_dir", None)
    if data_dir is None:
        fail("no data dir")
    try:
        return open_store(data_dir)
    except TokenError as exc:
        fail(str(exc))


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: str = typer.Option(..., "--role", help="admin (every CDR) or account (one account's CDRs)."),
    account: str = typer.Option("", "--account", metavar="USER@DOMAIN",
                                help="The account an account token is limited to."),
    name: str = typer.Option("", "--name", help="A note to recognise the token by."),
) -> None:
    """Create a token and print it (once: only its hash is kept)."""
    store = _open(ctx)
    try:
        info, token = store.create(role, account, name)
    except TokenError as exc:
        fail(str(exc))
    finally:
        store.close()
    scope = f" account={info.account}" if info.account else ""
    typer.echo(f"created token id={info.id} role={info.role}{scope}", err=True)
    typer.echo(token)


@token_app.command("list")
def token_list(ctx: typer.Context,
               all_: bool = typer.Option(False, "--all", help="Include revoked tokens.")) -> None:
    """List tokens (ids, roles, accounts; never the tokens themselves)."""
    store = _open(ctx)
    try:
        tokens = store.list(include_revoked=all_)
    except TokenError as exc:
        fail(str(exc))
    finally:
        store.close()
    if not tokens:
        typer.echo("no tokens")
        return
    typer.echo(f"{'ID':<13} {'ROLE':<8} {'ACCOUNT':<32} {'CREATED':<20} {'REVOKED':<20} NAME")
    for t in tokens:
        revoked = t.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if t.revoked_at else "-"
        typer.echo(f"{t.id:<13} {t.role:<8} {t.account or '-':<32} "
                   f"{t.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {revoked:<20} {t.name}")


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Revoke a token by id: the API refuses it from the next request on."""
    store = _open(ctx)
    try:
        info = store.revoke(token_id)
    except TokenError as exc:
        fail(str(exc))
    finally:
        store.close()
    typer.echo(f"revoked token id={info.id}")
