"""What every `sipledger` sub-command shares: one-line errors, tables, and a
store opened for the length of one command.

A command that cannot do what it was asked ends with ``error: <one line>`` on
stderr and a non-zero status — 1 for a refused operation, 2 for a bad command
line — never a traceback.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .sqldb import SqlStore

S = TypeVar("S", bound=SqlStore)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def usage(message: str) -> NoReturn:
    """A bad command line: exit status 2."""
    fail(message, 2)


def print_table(table: Table) -> None:
    Console(soft_wrap=True).print(table)


def print_rows(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A listing: one table, one row per item."""
    table = Table(*columns)
    for row in rows:
        table.add_row(*row)
    print_table(table)


@contextmanager
def opened(store_class: type[S], url: str, *, also: tuple[type[Exception], ...] = ()) -> Iterator[S]:
    """``store_class`` on ``url`` with its tables created, closed at the end; its
    errors (and ``also``) end the command with one line."""
    store = None
    try:
        store = store_class(url)
        store.create_schema()
        yield store
    except (store_class.error, *also) as exc:
        fail(str(exc))
    finally:
        if store is not None:
            store.close()
