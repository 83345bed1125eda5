"""The ``[billing]`` section of sipledger.toml.

    [billing]
    db_url = ""              # SQLAlchemy URL; default sqlite DATA_DIR/billing.sqlite
    currency = "EUR"         # default currency of imported rates that leave it empty
    timezone = "UTC"         # IANA zone of new rate plans (their weekday/time periods)
    default_plan = ""        # plan for accounts with no assignment ("" = none: unrated)
"""
from __future__ import annotations

import os
from pathlib import Path

import msgspec

from proxy.contract.sqldb import sqlite_url

from .rating import RatingError, check_currency, check_plan_name, check_timezone

__all__ = ["BillingSettings", "database_url", "DB_NAME"]

DB_NAME = "billing.sqlite"


class BillingSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True                # `up` runs the billing service (credit control, ledger)
    db_url: str = ""
    currency: str = "EUR"
    timezone: str = "UTC"
    default_plan: str = ""

    def __post_init__(self) -> None:
        # raised as ValueError so the config loader reports "key 'billing': ..."
        try:
            check_currency(self.currency)
            check_timezone(self.timezone)
            if self.default_plan:
                check_plan_name(self.default_plan)
        except RatingError as exc:
            raise ValueError(str(exc)) from None


def database_url(settings: BillingSettings, data_dir: str | os.PathLike) -> str:
    return settings.db_url or sqlite_url(Path(data_dir) / DB_NAME)
