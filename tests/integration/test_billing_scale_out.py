"""Two billing instances (``[billing] partitioned``) on one PostgreSQL ledger and the real broker:
each answers the authorizations of the accounts it owns (and no other), the
proxy's AuthorizationClient finds the owner through the owner table, and a
``kill -9`` of one instance mid-traffic hands its partitions to the survivor,
which rebuilds the live reservations from the ledger -- every call debited
exactly once, every ledger event on ``ledger.events``, and ``ledger check``
clean on the ClickHouse server back end."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal as D

import pytest
from sqlalchemy import create_engine, text

from billing.client import BillingClient
from billing.ledger.accounts import AccountInfo
from billing.ledger.check import run_check
from billing.ledger.clickhouse import LedgerQueries
from billing.ledger.events import money_event
from billing.ledger.owners import Fenced, Ownership
from billing.ledger.store import LedgerStore
from billing.rating.model import max_duration
from billing.rating.store import RatesStore
from billing.rpc import RpcRequest
from cdr.store.queries import CdrStore
from proxy.contract import credit
from proxy.contract import events as ev
from proxy.contract.ledger import decode_event
from proxy.infra.clickhouse.migrate import migrate
from proxy.infra.clock import now_ms
from proxy.infra.config import AuthorizationSettings, BillingSettings
from proxy.runtime.authorization import AuthorizationClient
from tests.harness.billing import (
    BillingProcess,
    Topics,
    answered,
    bye,
    cdr_leg,
    create_topics,
    encode_cdr,
    invite,
    simple_plan,
)
from tests.harness.broker import produce, read_all, settings_for
from tests.harness.poll import eventually
from tests.harness.postgres import PostgresServer, postgres_available

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (Debian postgresql) not installed")]

NUMBER = "4930123456"
ACCOUNTS = [f"user{i}@example.test" for i in range(12)]
FRAUDSTER = "fraud@example.test"


def fraud_alert(call_id: str, account: str) -> bytes:
    return ev.encode(ev.FraudAlert(id=uuid.uuid4().hex, ts_ms=now_ms(), call_id=call_id, from_tag="ft", proxy="test",
                                   severity="critical", parameter="cpm", value=30, threshold=20, user=account,
                                   account=account, number=NUMBER, prefix="49", profile="default", rule_id=1,
                                   action="block_account"))


def _request(account: str) -> credit.AuthorizeRequest:
    return credit.AuthorizeRequest(id=uuid.uuid4().hex, ts_ms=now_ms(), call_id=uuid.uuid4().hex, account=account,
                                   destination=NUMBER, request_uri=f"sip:{NUMBER}@example.test",
                                   caller_uri=f"sip:{account}")


def authorize(addr: tuple[str, int], account: str, timeout: float = 2.0) -> credit.AuthorizeResponse | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(credit.encode(_request(account)), addr)
        try:
            return credit.decode_response(sock.recv(4096))
        except socket.timeout:
            return None


def owners(url: str) -> dict[int, tuple[str, str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {r.part: (r.owner, r.host, r.port)
                    for r in conn.execute(text("SELECT part, owner, host, port FROM billing_owner"))}
    finally:
        engine.dispose()


def owned_by_all(url: str, instances: set[str], partitions: int) -> dict | None:
    table = owners(url)
    ok = (len(table) == partitions and {o for o, _, p in table.values() if p} == instances
          and all(p for _, _, p in table.values()))
    return table if ok else None


async def proxy_authorizations(url: str, data_dir, accounts: list[str]) -> tuple[list, float]:
    """The proxy's client, routing by the owner table: every answer, and authorizations/s."""
    client = AuthorizationClient(AuthorizationSettings(owners_url=url, timeout_ms=1000, retries=1), data_dir)
    await client.start()
    try:
        for _ in range(50):                       # the first owner table read
            if client.owners is not None and client.owners.partitions:
                break
            await asyncio.sleep(0.05)
        started = time.perf_counter()
        answers: list = []
        futures = []
        for account in accounts:
            future = asyncio.get_running_loop().create_future()
            client.authorize(_request(account), future.set_result)
            futures.append(future)
            if len(futures) >= 50:               # a bounded window, as a proxy's in-flight INVITEs
                answers += await asyncio.gather(*futures)
                futures = []
        answers += await asyncio.gather(*futures)
        return answers, len(accounts) / (time.perf_counter() - started)
    finally:
        client.close()


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        yield server


def test_a_claim_waits_for_the_previous_owners_append_in_flight(pg):
    """The fence on PostgreSQL: the take-over's UPDATE waits for an append holding
    the partition's row FOR SHARE, so that append is in the ledger before the new
    owner folds; the old owner's next append is refused."""
    url = pg.create_database("fence")
    old_store, new_store = LedgerStore(url), LedgerStore(url)
    old_store.create_schema()
    old, new = Ownership(2, "old"), Ownership(2, "new")
    with old_store.transaction() as conn:
        old.ensure_rows(conn, 0)
        old.claim_in(conn, {0}, 0)
    account = next(a for a in ACCOUNTS if old.part(a) == 0)
    old_store.fence = old.check_in
    in_flight, finish, claimed = threading.Event(), threading.Event(), threading.Event()

    def slow_append() -> None:
        with old_store.transaction() as conn:
            old_store.append_in(conn, [money_event(AccountInfo(id=account), "topup", D("1"), "k1", ts_ms=0)])
            in_flight.set()
            finish.wait(10)

    def claim() -> None:
        with new_store.transaction() as conn:
            new.claim_in(conn, {0}, 0)
        claimed.set()

    threads = [threading.Thread(target=slow_append), threading.Thread(target=claim)]
    try:
        threads[0].start()
        assert in_flight.wait(10)
        threads[1].start()
        assert not claimed.wait(0.5), "the claim did not wait for the append in flight"
    finally:
        finish.set()
        for thread in threads:
            thread.join(10)
    assert claimed.is_set()
    assert len(new_store.events_of([account])) == 1, "the append in flight is in the new owner's fold"
    with pytest.raises(Fenced):
        old_store.append([money_event(AccountInfo(id=account), "topup", D("1"), "k2", ts_ms=0)])
    old_store.close()
    new_store.close()


def test_two_instances_split_accounts_and_survive_a_kill(tmp_path, broker, pg, clickhouse_server):
    kafka = settings_for(broker)
    topics = Topics()
    asyncio.run(create_topics(kafka, topics))
    partitions = kafka.partitions
    procs: list[BillingProcess] = []
    url = pg.create_database("billing")
    settings = BillingSettings(db_url=url, partitioned=True)
    config = tmp_path / "sipledger.toml"
    config.write_text(topics.config() + f'[billing]\ndb_url = "{url}"\npartitioned = true\n')
    data = [tmp_path / "a", tmp_path / "b"]
    for d in data:
        d.mkdir()
    rates = RatesStore(url)
    rates.create_schema()
    plan = simple_plan()
    rates.put_plans({plan.name: plan})
    admin = BillingClient(data[0], settings)
    for account in ACCOUNTS + [FRAUDSTER]:
        rates.assign(account, plan.name)
        admin.put_account(account, {"kind": "prepaid", "currency": "EUR"}, create=True)
        admin.money(account, "topup", "10.00", f"first-{account}")        # no instance runs yet
    rates.close()
    store = LedgerStore(url)
    try:
        procs.append(BillingProcess(data[0], config, broker.bootstrap).start())
        procs.append(BillingProcess(data[1], config, broker.bootstrap).start())
        names = {BillingClient(d, settings).request(RpcRequest(op="ping"))["instance"] for d in data}
        table = eventually(lambda: owned_by_all(url, names, partitions), "both instances to own partitions",
                           timeout=30)
        by_port = {proc.port: proc for proc in procs}
        owner_of = {a: table[credit.account_partition(a, partitions)] for a in ACCOUNTS}
        assert {port for _, _, port in owner_of.values()} == set(by_port), "accounts on both instances"

        # authorizations: the owner answers from its memory, the other instance stays silent
        expected = max_duration(plan, NUMBER, now_ms(), D("10.00"))
        for account, (_, host, port) in owner_of.items():
            answer = authorize((host, port), account)
            assert answer is not None and answer.allowed and answer.max_duration_s == expected, account
        other = {p: q for p, q in zip(by_port, reversed(list(by_port)))}
        account, (_, host, port) = next(iter(owner_of.items()))
        assert authorize((host, other[port]), account, timeout=0.5) is None
        # ... and the proxy's client finds the owner of every account by itself
        answers, rate = asyncio.run(proxy_authorizations(url, data[0], ACCOUNTS * 20))
        assert all(a is not None and a.allowed for a in answers)
        print(f"\nauthorizations through the owner table: {rate:.0f}/s over 2 instances")

        # money commands reach the owner from either instance; an idempotency key holds across them
        for account in ACCOUNTS[:4]:
            first = BillingClient(data[0], settings).money(account, "topup", "1.00", f"again-{account}")
            second = BillingClient(data[1], settings).money(account, "topup", "1.00", f"again-{account}")
            assert (first["replayed"], second["replayed"]) == (False, True) and first["live"]
            assert first["balance"] == second["balance"] == "11.00"
            assert BillingClient(data[1], settings).balance(account)["balance"] == "11.00"

        # a fraud alert blocks the account whichever instance reads it (its owner does it)
        asyncio.run(produce(kafka, topics.sip_events, [
            (f"fraud-{i}".encode(), fraud_alert(f"fraud-{i}", FRAUDSTER)) for i in range(12)]))
        _, host, port = table[credit.account_partition(FRAUDSTER, partitions)]
        eventually(lambda: (answer := authorize((host, port), FRAUDSTER)) is not None and not answer.allowed,
                   "the fraudster's account to be blocked", timeout=20)
        assert store.get_account(FRAUDSTER).status == "blocked"

        # traffic: two calls per account, half of them over before the kill
        calls = [(f"c{i}-{uuid.uuid4().hex[:8]}", ACCOUNTS[i % len(ACCOUNTS)]) for i in range(24)]
        answer_ms = now_ms() - 20_000
        asyncio.run(produce(kafka, topics.sip_events, [
            (c.encode(), msg) for c, a in calls
            for msg in (invite(c, a, NUMBER, answer_ms - 3000), answered(c, answer_ms))]))

        def reserved() -> bool:
            held = {e.call_id for e in store.events(kinds=["reservation"])}
            return all(c in held for c, _ in calls)
        eventually(reserved, "every call to hold a reservation", timeout=30)

        def end(batch, end_ms):
            asyncio.run(produce(kafka, topics.sip_events, [(c.encode(), bye(c, end_ms)) for c, _ in batch]))
            asyncio.run(produce(kafka, topics.cdr, [
                (c.encode(), encode_cdr(cdr_leg(c, a, NUMBER, answer_ms, end_ms))) for c, a in batch]))

        def debited(batch) -> bool:
            debits = Counter(e.call_id for e in store.events(kinds=["debit"]))
            return all(debits[c] >= 1 for c, _ in batch)

        end(calls[:12], answer_ms + 7_000)
        eventually(lambda: debited(calls[:12]), "the first calls to be debited", timeout=30)

        victim, survivor = procs[0], procs[1]
        victim.kill()                                       # kill -9
        killed = time.perf_counter()
        survivor_name = BillingClient(data[1], settings).request(RpcRequest(op="ping"))["instance"]
        eventually(lambda: owned_by_all(url, {survivor_name}, partitions),
                   "the survivor to own every partition", timeout=30)
        status = BillingClient(data[1], settings).request(RpcRequest(op="ping"))
        print(f"rebalance after kill -9: {time.perf_counter() - killed:.1f}s")
        assert status["partitions"] == list(range(partitions))
        assert status["calls"] == 12, "the live calls of both instances, rebuilt from the ledger"
        for account in ACCOUNTS:                            # it answers for every account now
            assert authorize(("127.0.0.1", survivor.port), account) is not None

        end(calls[12:], answer_ms + 11_000)
        eventually(lambda: debited(calls), "every call to be debited", timeout=30)
        time.sleep(1.5)                 # anything doubled would land within a commit interval or two
        debits = [e for e in store.events(kinds=["debit"])]
        assert sorted(Counter(e.call_id for e in debits).values()) == [1] * len(calls)
        eventually(lambda: BillingClient(data[1], settings).request(RpcRequest(op="ping"))["calls"] == 0,
                   "every reservation released", timeout=20)

        # the ledger, each event once by id, on ledger.events (the survivor published the victim's rest)
        ids = {e.id for e in store.events()}
        records = asyncio.run(read_all(kafka, topics.ledger, at_least=len(ids), timeout=20))
        assert {decode_event(r.value).id for r in records} == ids

        # `ledger check` on the ClickHouse server: the CDR legs as the CDR sink stores them, the
        # ledger copy as the ledger sink stores ledger.events (duplicates collapse), the SQL ledger
        legs = [cdr_leg(c, a, NUMBER, answer_ms, answer_ms + (7_000 if i < 12 else 11_000))
                for i, (c, a) in enumerate(calls)]
        backend = clickhouse_server.backend(f"t_{uuid.uuid4().hex[:12]}")
        try:
            migrate(backend)
            CdrStore(backend).insert_legs(legs)
            LedgerQueries(backend).insert([decode_event(r.value) for r in records])
            with RatesStore(url) as rates_now:
                check = run_check(backend, store, rates_now, from_ms=None, to_ms=None)
            assert check.ok, check.to_dict()["differences"]
            assert sum(p.debits for p in check.periods) == len(calls)
        finally:
            backend.execute(f"DROP DATABASE IF EXISTS {backend.database}")
            backend.close()
    finally:
        for proc in procs:
            proc.kill()
        store.close()
