"""What the billing commands share: settings from ``ctx.obj``, the ledger store, one-line errors.

The main CLI (api/cli.py) sets ``ctx.obj`` with ``.data_dir`` and ``.config``.
Every error is one line on stderr, ``error: ...``: exit status 2 for a bad
command line (naming the option at fault), 1 for a refused operation.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.console import Console

from billing.client import BillingClient
from billing.errors import LedgerError
from billing.ledger.store import LedgerStore
from billing.reports.periods import PeriodError, month_range, parse_bound
from proxy.infra.cli import fail, opened, usage
from proxy.infra.config import BillingSettings

__all__ = ["fail", "usage", "billing_settings", "data_dir", "client", "ledger_store", "invoke", "bound", "period",
           "check_limit", "console", "time_text"]

MAX_LIMIT = 1000


def billing_settings(ctx: typer.Context) -> BillingSettings:
    return getattr(getattr(ctx.obj, "config", None), "billing", None) or BillingSettings()


def data_dir(ctx: typer.Context) -> Path:
    path = getattr(ctx.obj, "data_dir", None)
    if path is None:
        fail("no data dir")
    return Path(path)


def client(ctx: typer.Context) -> BillingClient:
    return BillingClient(data_dir(ctx), billing_settings(ctx))


def ledger_store(ctx: typer.Context) -> AbstractContextManager[LedgerStore]:
    return opened(LedgerStore, billing_settings(ctx).database_url(data_dir(ctx)))


def invoke(fn, *args, **kwargs):
    """``fn(...)``, a refused operation (LedgerError) as a one-line error."""
    try:
        return fn(*args, **kwargs)
    except LedgerError as exc:
        fail(str(exc))


def bound(text: str | None, option: str, *, end: bool = False) -> int | None:
    """An option's ISO date/time, YYYY-MM or epoch ms as epoch ms (None: not given)."""
    if not text:
        return None
    try:
        return parse_bound(text, end=end)
    except PeriodError as exc:
        usage(f"{option}: {exc}")


def period(from_: str | None, to: str | None, month: str | None = None) -> tuple[int | None, int | None]:
    """``[from, to)`` of ``--from``/``--to`` (a date or month as ``--to`` means its end) or of
    ``--month``; refused when inverted or empty."""
    if month:
        if from_ or to:
            usage("--month or --from/--to, not both")
        try:
            return month_range(month)
        except PeriodError as exc:
            usage(f"--month: {exc}")
    from_ms, to_ms = bound(from_, "--from"), bound(to, "--to", end=True)
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        usage("--from must be before --to")
    return from_ms, to_ms


def check_limit(value: int, option: str) -> int:
    if not 1 <= value <= MAX_LIMIT:
        usage(f"{option} must be between 1 and {MAX_LIMIT}, not {value}")
    return value


def console() -> Console:
    return Console(soft_wrap=True)


def time_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
