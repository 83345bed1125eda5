"""Two billing instances on one PostgreSQL ledger: authorizations/s through the proxy's
client (routed by the owner table) and the take-over time after a kill -9.

    PYTHONPATH=. .venv/bin/python bench/billing_scale_out.py [--accounts 200] [--requests 20000] [--window 100]

Starts a private PostgreSQL (tests/harness/postgres.py), an embedded Tansu
broker and two ``python -m billing`` processes with ``[billing] partitioned``,
then (1) sends ``--requests`` authorizations through
proxy/runtime/authorization.py's ``AuthorizationClient`` with at most
``--window`` in flight, and (2) kills one instance (SIGKILL) and times until
the survivor has announced every partition in ``billing_owner`` (it answers
for them from then on).  Everything runs on the same cores as the client.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from billing.client import BillingClient  # noqa: E402
from billing.rating.store import RatesStore  # noqa: E402
from proxy.contract import credit  # noqa: E402
from proxy.infra.clock import now_ms  # noqa: E402
from proxy.infra.config import AuthorizationSettings, BillingSettings  # noqa: E402
from proxy.runtime.authorization import AuthorizationClient  # noqa: E402
from proxy.runtime.billing_owners import OwnerReader  # noqa: E402
from tests.harness.billing import BillingProcess, Topics, create_topics, simple_plan  # noqa: E402
from tests.harness.broker import settings_for, start_broker  # noqa: E402
from tests.harness.postgres import PostgresServer  # noqa: E402

NUMBER = "4930123456"


def request(account: str) -> credit.AuthorizeRequest:
    return credit.AuthorizeRequest(id=uuid.uuid4().hex, ts_ms=now_ms(), call_id=uuid.uuid4().hex, account=account,
                                   destination=NUMBER, request_uri=f"sip:{NUMBER}@example.test",
                                   caller_uri=f"sip:{account}")


async def load(url: str, data: Path, accounts: list[str], n: int, window: int) -> tuple[float, int]:
    client = AuthorizationClient(AuthorizationSettings(owners_url=url, timeout_ms=1000, retries=1), data)
    await client.start()
    try:
        while client.owners is None or not client.owners.partitions:
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        answered = 0
        started = time.perf_counter()
        for start in range(0, n, window):
            futures = []
            for i in range(start, min(n, start + window)):
                future = loop.create_future()
                client.authorize(request(accounts[i % len(accounts)]), future.set_result)
                futures.append(future)
            answered += sum(1 for a in await asyncio.gather(*futures) if a is not None and a.allowed)
        return n / (time.perf_counter() - started), answered
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="billing-scale-"))
    broker = start_broker(tmp)
    procs: list[BillingProcess] = []
    try:
        with PostgresServer() as pg:
            url = pg.create_database("billing")
            kafka, topics = settings_for(broker), Topics()
            asyncio.run(create_topics(kafka, topics))
            config = tmp / "sipledger.toml"
            config.write_text(topics.config() + f'[billing]\ndb_url = "{url}"\npartitioned = true\n')
            settings = BillingSettings(db_url=url, partitioned=True)
            data = [tmp / "a", tmp / "b"]
            for d in data:
                d.mkdir()
            accounts = [f"bench{i}@example.test" for i in range(args.accounts)]
            with RatesStore(url) as rates:
                rates.create_schema()
                plan = simple_plan()
                rates.put_plans({plan.name: plan})
                admin = BillingClient(data[0], settings)
                for account in accounts:
                    rates.assign(account, plan.name)
                    admin.put_account(account, {"kind": "prepaid", "currency": "EUR"}, create=True)
                    admin.money(account, "topup", "100.00", "bench")
            procs += [BillingProcess(d, config, broker.bootstrap).start() for d in data]
            reader = OwnerReader(url)
            while len({addr for addr in reader.read().owners.values()}) < 2:
                time.sleep(0.1)
            rate, answered = asyncio.run(load(url, data[0], accounts, args.requests, args.window))
            print(f"authorizations: {rate:.0f}/s over 2 instances, window {args.window}, "
                  f"{answered}/{args.requests} allowed")
            survivor = procs[1].port
            procs[0].kill()
            killed = time.perf_counter()
            while set(reader.read().owners.values()) != {("127.0.0.1", survivor)} or \
                    len(reader.read().owners) != kafka.partitions:
                time.sleep(0.05)
            print(f"take-over after kill -9: {time.perf_counter() - killed:.1f} s "
                  f"(until the survivor announced all {kafka.partitions} partitions)")
            procs[0] = BillingProcess(data[0], config, broker.bootstrap).start()
            while len(set(reader.read().owners.values())) < 2:
                time.sleep(0.05)
            remaining = procs[0].port
            procs[1].stop()                                 # SIGTERM: a clean hand-over
            stopped = time.perf_counter()
            while set(reader.read().owners.values()) != {("127.0.0.1", remaining)} or \
                    len(reader.read().owners) != kafka.partitions:
                time.sleep(0.05)
            print(f"hand-over after a clean stop: {time.perf_counter() - stopped:.1f} s")
            reader.close()
    finally:
        for proc in procs:
            proc.kill()
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
