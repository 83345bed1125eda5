"""The ledger writer's merged appends: consecutive ``Writer.append`` requests
written as one ``append_in`` must give each request what it would have got
alone (its own new events, in submission order), and a failing request must
still fail alone."""
from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal as D

import pytest

from billing.ledger.accounts import AccountInfo
from billing.ledger.events import Problem, money_event
from billing.ledger.store import LedgerStore
from billing.ledger.writer import Writer
from proxy.contract.ledger import LedgerEvent
from tests.harness.postgres import PostgresServer, postgres_available


def ev(n: int, account: str = "alice@a.test") -> LedgerEvent:
    return LedgerEvent(id=f"e{n}", account=account, kind="reservation", amount=D("0.010000"), currency="EUR",
                       ts_ms=1000 + n, call_id=f"c{n}")


@pytest.fixture(scope="module")
def pg_server():
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed")
    with PostgresServer() as server:
        yield server


_DATABASES = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/billing.sqlite"
    else:
        url = request.getfixturevalue("pg_server").create_database(f"writer{next(_DATABASES)}")
    s = LedgerStore(url)
    s.create_schema()
    yield s
    s.close()


def run(store: LedgerStore, body):
    async def main():
        writer = Writer(store, asyncio.get_running_loop())
        try:
            return await body(writer)
        finally:
            writer.close()
    return asyncio.run(main())


def test_merged_appends_keep_order_and_give_each_request_its_new_events(store):
    acc = AccountInfo(id="alice@a.test", currency="EUR")
    store.put_account(acc, create=True)
    store.append([ev(0)])                                   # in the ledger already

    async def body(writer: Writer):
        first = writer.append_many([([ev(1), ev(0), ev(2), ev(1)], [], []),
                                    ([ev(2), ev(3)], [Problem(id="p", ts_ms=1, account=acc.id, reason="x")] * 2,
                                     [("billing.notifications", acc.id, b"n1")])])
        topup = writer.txn(lambda conn: store.append_in(conn, [money_event(acc, "topup", D("5"), "k", ts_ms=9)]))
        last = writer.append_many([([ev(4)], [Problem(id="p", ts_ms=2, account=acc.id, reason="again")],
                                    [("billing.notifications", acc.id, b"n2")])])
        return await asyncio.gather(*first, topup, *last)

    a, b, t, c = run(store, body)
    assert [(e.id, e.seq) for e in a] == [("e1", 2), ("e2", 3)]   # e0 was there, e1 named twice
    assert [(e.id, e.seq) for e in b] == [("e3", 4)]              # e2 was the first request's
    assert [e.kind for e in t] == ["topup"] and t[0].seq == 5      # a txn between appends keeps its place
    assert [(e.id, e.seq) for e in c] == [("e4", 6)]
    assert [e.id for e in store.events()] == ["e0", "e1", "e2", "e3", t[0].id, "e4"]
    assert [p.reason for p in store.problems()] == ["x"]           # once, the first one
    assert [r[3] for r in store.outbox_batch()] == [b"n1", b"n2"]


def test_a_failing_request_fails_alone(store):
    def fence(conn, accounts):
        if "mallory@a.test" in accounts:
            raise RuntimeError("not ours")
    store.fence = fence

    async def body(writer: Writer):
        futures = writer.append_many([([ev(1)], [], []), ([ev(2, "mallory@a.test")], [], []), ([ev(3)], [], [])])
        return await asyncio.gather(*futures, return_exceptions=True)

    ok1, failed, ok3 = run(store, body)
    assert isinstance(failed, RuntimeError)
    assert [e.id for e in ok1] == ["e1"] and [e.id for e in ok3] == ["e3"]
    assert sorted(e.id for e in store.events()) == ["e1", "e3"]


def test_lingering_appends_share_one_commit_and_a_barrier_ends_the_wait(store):
    """With ``linger_s`` appends wait for company; a non-append request (the
    Kafka commit's barrier, a money command) joins them and commits at once."""
    async def body(writer: Writer):
        first, second = writer.append([ev(1)]), writer.append([ev(2)])
        await asyncio.wait_for(writer.barrier(), 30)          # far below the linger: the barrier ended it
        return await first, await second, writer.commits

    async def main():
        writer = Writer(store, asyncio.get_running_loop(), linger_s=600)
        try:
            return await body(writer)
        finally:
            writer.close()

    first, second, commits = asyncio.run(main())
    assert [e.seq for e in first + second] == [1, 2]
    assert commits == 1
