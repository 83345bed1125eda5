"""``sipledger db ...``: the ClickHouse schema from the command line.

With the embedded back end (chdb) only one process may open the data path:
run ``db`` commands while ``sipledger up`` is stopped (``up`` migrates at
start anyway).  With ``backend = "server"`` they can run at any time.
"""
from __future__ import annotations

import typer

from proxy.infra.clickhouse.backend import BackendError, open_backend
from proxy.infra.clickhouse.migrate import MigrationError, current_version, load, migrate

db_app = typer.Typer(help="The CDR store (ClickHouse): schema migrations.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _backend(ctx: typer.Context):
    obj = ctx.obj
    try:
        return open_backend(obj.config.clickhouse, obj.data_dir)
    except BackendError as exc:
        _fail(f"CDR store: {str(exc).splitlines()[0]}")


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply the schema migrations the store does not have yet (idempotent)."""
    backend = _backend(ctx)
    try:
        applied = migrate(backend)
        version = current_version(backend)
    except (BackendError, MigrationError) as exc:
        _fail(str(exc).splitlines()[0])
    finally:
        backend.close()
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    typer.echo(f"schema version {version} ({backend.kind}): {done}")


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """Print the store's schema version and the newest this program knows."""
    backend = _backend(ctx)
    try:
        version = current_version(backend)
    except BackendError:
        version = 0     # no schema_migrations table yet
    finally:
        backend.close()
    newest = len(load()[1])
    typer.echo(f"schema version {version} of {newest} ({backend.kind})")
