"""The billing command line, mounted by the main CLI (api/cli.py):

* ``account``  -- accounts, top-ups, adjustments, balances (``accounts``);
* ``ledger``   -- history and ``ledger check`` (``ledger``);
* ``report``   -- statement, destinations, gateways, invoice files (``reports``);
* ``rates``    -- rate plans (billing/rating/cli.py);
* ``rerate``   -- rerate a period, list and show runs (``rerate``).

Shared helpers (settings, one-line errors, periods) are in ``common``.
"""
from billing.rating.cli import rates_app

from .accounts import account_app
from .ledger import ledger_app
from .reports import report_app
from .rerate import rerate_app

__all__ = ["account_app", "ledger_app", "report_app", "rates_app", "rerate_app"]
