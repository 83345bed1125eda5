"""Provision a data dir for bench/sip_rate.sh's "credit" run, before `sipledger up` starts.

    .venv/bin/python bench/sip_credit_setup.py DATA_DIR CONFIG USERS_CSV [--users 1000]
        [--domain bench.test] [--prefix 49] [--topup 1000]

What a prepaid operator has after the README's quick start, through the same
service layer the CLI and REST call (one process, so 1,000 subscribers take
seconds, not 2,000 CLI starts):

* the served domain (``sipledger domain add``);
* USERS subscribers ``u00000..`` with passwords (``sipledger user add``);
* a rate plan ``bench`` pricing the dialled prefix (``sipledger rates import``),
  assigned to every account (``sipledger rates assign``);
* one prepaid billing account per subscriber, topped up with --topup
  (``sipledger account add --prepaid`` / ``account topup``): enough that no
  call of the run is refused for credit.

USERS_CSV is SIPp's -inf file: ``SEQUENTIAL``, then ``user;[authentication
username=user password=...];domain`` a line, so each call of
bench/uac_auth.xml authenticates as the next subscriber.  SIPp takes no
field inside the [authentication] keyword (it ends at the first ``]``), but a
field may hold the whole keyword, which SIPp then expands (checked with SIPp
3.6.1).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from billing.application import BillingApplication, StoredLedger  # noqa: E402
from billing.ledger.store import LedgerStore, ServiceLock  # noqa: E402
from billing.rating.csvfile import plan_import  # noqa: E402
from billing.rating.store import RatesStore  # noqa: E402
from billing.rpc import RpcRequest  # noqa: E402
from proxy.infra import config as config_mod  # noqa: E402
from proxy.provisioning import service  # noqa: E402
from proxy.provisioning.store import ProvisioningStore, default_url  # noqa: E402

PLAN = "bench"
MAX_USERS = 100_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("config", type=Path)
    ap.add_argument("users_csv", type=Path)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--domain", default="bench.test")
    ap.add_argument("--prefix", default="49", help="dialled prefix the plan prices")
    ap.add_argument("--topup", default="1000", help="credit per account (the plan's currency)")
    args = ap.parse_args()
    if not 0 < args.users <= MAX_USERS:
        ap.error(f"--users must be 1..{MAX_USERS}")
    t0 = time.monotonic()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_mod.load(args.config)
    users = [(f"u{i:05d}", f"pw{i:05d}x") for i in range(args.users)]
    accounts = [f"{user}@{args.domain}" for user, _ in users]

    store = ProvisioningStore(cfg.provisioning.url or default_url(args.data_dir))
    try:
        store.create_schema()
        service.add_domain(store, args.domain)
        for (user, password), account in zip(users, accounts):
            service.add_user(store, account, password)
    finally:
        store.close()

    billing = cfg.billing
    rates = RatesStore(billing.database_url(args.data_dir))
    try:
        rates.create_schema()
        # 0.60 a minute in 1 s increments: an authorization's first increment costs 0.01
        csv_text = ("prefix,name,price_per_min,first_increment,next_increment\n"
                    f"{args.prefix},bench destinations,0.60,1,1\n")
        result = plan_import(csv_text, existing=rates.get_plans(), plan=PLAN,
                             currency=billing.currency, timezone=billing.timezone)
        rates.put_plans(result.plans)
        for account in accounts:
            rates.assign(account, PLAN)
    finally:
        rates.close()

    # the money commands BillingClient runs when no service holds the ledger
    # (billing/client.py _direct), with the ledger opened once for all of them
    url = billing.database_url(args.data_dir)
    with ServiceLock(args.data_dir), LedgerStore(url) as ledger, RatesStore(url) as plans:
        ledger.create_schema()
        app = BillingApplication(StoredLedger(ledger, plans), default_currency=billing.currency,
                                 default_plan=billing.default_plan)

        async def accounts_with_credit() -> None:
            for account in accounts:
                await app.execute(RpcRequest(op="account.put", account=account, fields={"kind": "prepaid"},
                                             create=True))
                await app.execute(RpcRequest(op="money", account=account, kind="topup", amount=args.topup,
                                             key=f"bench-topup-{account}"))
        asyncio.run(accounts_with_credit())

    with args.users_csv.open("w") as f:
        f.write("SEQUENTIAL\n")
        f.writelines(f"{user};[authentication username={user} password={password}];{args.domain}\n"
                     for user, password in users)
    print(f"provisioned {args.users} subscribers and prepaid accounts ({args.topup} {billing.currency} each), "
          f"plan {PLAN!r} pricing {args.prefix}, domain {args.domain} in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
