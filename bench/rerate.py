"""Rerate benchmark: how many debited calls a rerate run prices and compensates per second.

    .venv/bin/python bench/rerate.py [--calls 100000] [--accounts 100]

On a scratch SQLite billing database (``synchronous = FULL``, as in production):
``--calls`` synthetic debited CDR legs over ``--accounts`` prepaid accounts, a
plan with a peak / off-peak split and a tariff change (validity boundary) in
the middle of the period, then the price per minute is changed and the period
rerated through the money command (billing/application.py, the path the CLI
takes when no billing service runs).  Reported, each as calls/s:

1. a dry run (read the ledger, price every call, no write);
2. the rerate that changes every call (price + one correction each, appended
   with the run's record in one transaction);
3. the same rerate again (finds nothing to change);
4. the rerate back to the old rates (every call changes again).

Afterwards every balance must equal the one before the first rerate, exactly.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from billing.application import BillingApplication, StoredLedger  # noqa: E402
from billing.ledger.accounts import build_account  # noqa: E402
from billing.ledger.events import debit_id  # noqa: E402
from billing.ledger.fold import fold  # noqa: E402
from billing.ledger.store import LedgerStore  # noqa: E402
from billing.rating.model import Rate, RatePlan, rate_call, to_epoch_ms  # noqa: E402
from billing.rating.store import RatesStore  # noqa: E402
from proxy.contract.ledger import LedgerEvent  # noqa: E402

T0 = to_epoch_ms(datetime(2026, 3, 1, tzinfo=timezone.utc))
CHANGE = datetime(2026, 3, 16, tzinfo=timezone.utc)        # a new tariff version mid-period
DAYS = 30


def plan(factor: Decimal) -> RatePlan:
    rates = []
    for name, valid in (("v1", {"valid_to": CHANGE}), ("v2", {"valid_from": CHANGE})):
        base = Decimal("0.10") if name == "v1" else Decimal("0.12")
        rates += [Rate(prefix="49", name=f"{name}-peak", price_per_min=base * factor, currency="EUR",
                       first_increment=60, next_increment=1, decimals=4, time_from=8 * 3600, time_to=20 * 3600,
                       **valid),
                  Rate(prefix="49", name=f"{name}-off", price_per_min=base * factor / 2, currency="EUR",
                       first_increment=60, next_increment=1, decimals=4, time_from=20 * 3600, time_to=8 * 3600,
                       **valid)]
    return RatePlan("bench", rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--accounts", type=int, default=100)
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="rerate-bench-"))
    try:
        url = f"sqlite:///{scratch}/billing.sqlite"
        store, rates = LedgerStore(url), RatesStore(url)
        store.create_schema()
        rates.create_schema()
        rates.put_plans({"bench": plan(Decimal(1))})
        accounts = [f"user{i}@bench.test" for i in range(args.accounts)]
        for a in accounts:
            store.put_account(build_account(a, {"kind": "prepaid"}, existing=None, now_ms=T0 - 1,
                                            default_currency="EUR"), create=True)
            rates.assign(a, "bench")
        base = rates.get_plan("bench")
        step = DAYS * 86_400_000 // args.calls
        started = time.perf_counter()
        batch: list[LedgerEvent] = []
        for i in range(args.calls):
            answer, duration = T0 + i * step, 5_000 + (i * 7919) % 600_000
            charge = rate_call(base, "4930123456", answer, duration)
            batch.append(LedgerEvent(
                id=debit_id(f"cdr-{i}", 0), account=accounts[i % len(accounts)], kind="debit", amount=charge.total,
                currency="EUR", ts_ms=answer + duration + 500, call_id=f"call-{i}", cdr_id=f"cdr-{i}", leg=0,
                answer_ms=answer, number=charge.number, plan="bench", prefix="49", rate_name=charge.name,
                duration_ms=duration, billed_s=charge.billed_seconds))
            if len(batch) == 10_000:
                store.append(batch)
                batch = []
        store.append(batch)
        print(f"setup: {args.calls} debited calls over {args.accounts} accounts in "
              f"{time.perf_counter() - started:.1f} s")
        before = {a: b.balance for a, b in fold(store.iter_events()).books.items()}
        app = BillingApplication(StoredLedger(store, rates))
        period = (T0, T0 + DAYS * 86_400_000)

        def timed(label: str, **kw) -> dict:
            t = time.perf_counter()
            run = asyncio.run(app.rerate(*period, who="bench", **kw))
            elapsed = time.perf_counter() - t
            print(f"{label:<28} {run['calls']:>8} calls, {run['changed']:>8} changed in {elapsed:6.2f} s "
                  f"= {run['calls'] / elapsed:>9,.0f} calls/s  (delta {run['delta']})")
            return run

        timed("dry run", dry_run=True)
        rates.put_plans({"bench": plan(Decimal("1.5"))})
        timed("rerate (all change)")
        timed("same rerate again")
        rates.put_plans({"bench": plan(Decimal(1))})
        timed("rerate back (all change)")
        after = {a: b.balance for a, b in fold(store.iter_events()).books.items()}
        assert after == before, "balances differ after rerating back"
        print(f"balances after rerating back: identical ({len(after)} accounts)")
        store.close()
        rates.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
