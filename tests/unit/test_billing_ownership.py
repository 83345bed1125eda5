"""Several billing instances on one ledger (billing/ledger/owners.py): the partitioner is
Kafka's, a take-over fences the previous owner's appends and publish cursors,
a release never clears a newer owner, the proxy's owner map routes only to
announced owners and its client sends each account to its owner, and credit
control adopts / drops accounts by partition."""
from __future__ import annotations

import asyncio
import random
import string
import uuid
from decimal import Decimal as D

import pytest
from aiokafka.partitioner import DefaultPartitioner

from billing.credit.control import CreditControl
from billing.ledger.accounts import AccountInfo
from billing.ledger.events import money_event, reservation_id
from billing.ledger.owners import Fenced, Ownership
from billing.ledger.store import LedgerStore
from billing.rating.model import Rate, RatePlan, RatesSnapshot
from proxy.contract import credit
from proxy.contract.credit import account_partition
from proxy.contract.ledger import LedgerEvent
from proxy.infra.config import AuthorizationSettings
from proxy.runtime.authorization import AuthorizationClient
from proxy.runtime.billing_owners import OwnerMap

T0 = 1_767_225_600_000
PARTS = 4


def test_account_partition_is_kafkas_default_partitioner():
    rng = random.Random(18)
    for _ in range(2000):
        key = "".join(rng.choice(string.printable + "éß€") for _ in range(rng.randint(0, 40)))
        for n in (1, 3, 6, 12):
            assert account_partition(key, n) == DefaultPartitioner()(key.encode(), list(range(n)), list(range(n)))


def _account_in(part: int, own: Ownership, prefix: str = "acct") -> str:
    return next(a for a in (f"{prefix}{i}@x.test" for i in range(1000)) if own.part(a) == part)


def _topup(account: str, key: str) -> LedgerEvent:
    return money_event(AccountInfo(id=account), "topup", D("1"), key, ts_ms=T0)


@pytest.fixture
def store(tmp_path):
    s = LedgerStore(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    s.create_schema()
    yield s
    s.close()


def _instance(store: LedgerStore, name: str, port: int) -> Ownership:
    own = Ownership(PARTS, name, host="127.0.0.1", port=port)
    with store.transaction() as conn:
        own.ensure_rows(conn, T0)
    return own


def _append(store: LedgerStore, own: Ownership, events: list[LedgerEvent]) -> list[LedgerEvent]:
    store.fence = own.check_in              # as the billing service sets it: every append is checked
    return store.append(events)


def test_a_take_over_fences_the_previous_owner(store):
    a, b = _instance(store, "a", 4001), _instance(store, "b", 4002)
    with store.transaction() as conn:
        a.claim_in(conn, {0, 1}, T0)
        a.announce_in(conn, {0, 1}, T0)
    in0, in1, in2 = _account_in(0, a), _account_in(1, a), _account_in(2, a)
    assert len(_append(store, a, [_topup(in0, "k1")])) == 1
    with pytest.raises(Fenced) as never_owned:
        _append(store, a, [_topup(in2, "k2")])
    assert never_owned.value.parts == {2}

    with store.transaction() as conn:               # b takes partition 0 while a still believes it owns it
        b.claim_in(conn, {0}, T0)
    with pytest.raises(Fenced) as stale:
        _append(store, a, [_topup(in0, "k3"), _topup(in1, "k4")])
    assert stale.value.parts == {0}
    assert store.get_event(_topup(in1, "k4").id) is None, "the fenced transaction wrote nothing"
    assert len(_append(store, a, [_topup(in1, "k4")])) == 1         # a keeps partition 1
    assert len(_append(store, b, [_topup(in0, "k3")])) == 1
    with pytest.raises(Fenced):                                    # nor can a move 0's publish cursor
        with store.transaction() as conn:
            a.save_cursors_in(conn, "ledger.events", {0: 99})

    with store.transaction() as conn:               # a's late release does not clear b's row
        a.release_in(conn, {0, 1}, T0)
        b.announce_in(conn, {0}, T0)
    routes = OwnerMap([(r.part, r.host, r.port) for r in _rows(store)])
    assert routes.route(in0) == ("127.0.0.1", 4002)
    assert routes.route(in1) is None, "released: no owner until another claims it"


def _rows(store: LedgerStore):
    from sqlalchemy import select

    from billing.ledger.store import owner_table
    with store.transaction() as conn:
        return conn.execute(select(owner_table).order_by(owner_table.c.part)).all()


def test_publish_cursors_start_at_the_single_instance_cursor(store):
    store.mark_published("ledger.events", 7)
    own = _instance(store, "a", 4001)
    with store.transaction() as conn:
        own.claim_in(conn, {0, 1}, T0)
        assert own.cursors_in(conn, "ledger.events", {0, 1}) == {0: 7, 1: 7}
        own.save_cursors_in(conn, "ledger.events", {1: 12})
        assert own.cursors_in(conn, "ledger.events", {0, 1}) == {0: 7, 1: 12}


def test_owner_map_routes_only_a_complete_table_to_announced_owners():
    rows = [(0, "10.0.0.1", 4001), (1, "", 0), (2, "10.0.0.2", 4002)]
    routes = OwnerMap(rows)
    assert routes.partitions == 3
    by_part = {p: next(a for a in (f"u{i}" for i in range(1000)) if account_partition(a, 3) == p) for p in range(3)}
    assert routes.route(by_part[0]) == ("10.0.0.1", 4001)
    assert routes.route(by_part[1]) is None
    assert OwnerMap([(0, "h", 1), (2, "h", 2)]).route("x") is None, "a gap: not set up yet"
    assert OwnerMap([(0, "h", 70000)]).route("x") is None


def test_credit_control_adopts_and_drops_accounts_by_partition():
    plan = RatePlan("p", [Rate(prefix="49", price_per_min=D("0.60"), currency="EUR", first_increment=1,
                               next_increment=1, connect_fee=D("0"), decimals=4, rounding="up")])
    core = CreditControl()
    own = Ownership(PARTS, "a")
    mine, theirs = _account_in(0, own, "m"), _account_in(1, own, "t")
    core.set_rates(RatesSnapshot(1, {"p": plan}, {mine: "p", theirs: "p"}))
    events = {acct: [_topup(acct, "t"), LedgerEvent(id=reservation_id(f"call-{acct}", 1), account=acct,
                                                    kind="reservation", amount=D("0.30"), currency="EUR",
                                                    ts_ms=T0, call_id=f"call-{acct}", step=1, paid_ms=30_000,
                                                    answer_ms=T0, number="4930", plan="p")]
              for acct in (mine, theirs)}
    fx = core.adopt([AccountInfo(id=mine)], events[mine], T0)
    assert set(core.calls) == {f"call-{mine}"} and fx.timers[f"call-{mine}"] is not None
    core.adopt([AccountInfo(id=theirs)], events[theirs], T0)
    assert core.available(mine) == core.available(theirs) == D("0.70")
    dropped = core.drop(lambda account: own.part(account) == 0)
    assert dropped == [f"call-{theirs}"]
    assert set(core.accounts) == {mine} and set(core.calls) == {f"call-{mine}"} and theirs not in core.books


class _FakeOwner(asyncio.DatagramProtocol):
    """A billing instance that answers every authorization it gets, allowed."""

    def __init__(self) -> None:
        self.accounts: list[str] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        request = credit.decode_request(data)
        self.accounts.append(request.account)
        self.transport.sendto(credit.encode(credit.AuthorizeResponse(id=request.id, allowed=True)), addr)


def test_the_proxys_client_sends_each_account_to_its_owner(tmp_path):
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        owners = [await loop.create_datagram_endpoint(_FakeOwner, local_addr=("127.0.0.1", 0)) for _ in range(2)]
        ports = [transport.get_extra_info("sockname")[1] for transport, _ in owners]
        client = AuthorizationClient(AuthorizationSettings(owners_url="sqlite://", timeout_ms=50, retries=1),
                                     tmp_path)
        client.transport, _ = await loop.create_datagram_endpoint(lambda: client, local_addr=("127.0.0.1", 0))
        # partitions 0, 1 -> the two owners; 2 has none (being taken over)
        client.owners = OwnerMap([(0, "127.0.0.1", ports[0]), (1, "127.0.0.1", ports[1]), (2, "", 0)])
        by_part = {p: [a for a in (f"u{i}@x.test" for i in range(200)) if account_partition(a, 3) == p][:3]
                   for p in range(3)}
        answers: dict[str, object] = {}
        done = asyncio.Event()
        wanted = sum(len(v) for v in by_part.values())

        def callback_for(account: str):
            def callback(response) -> None:
                answers[account] = response
                if len(answers) == wanted:
                    done.set()
            return callback
        for accounts in by_part.values():
            for account in accounts:
                client.authorize(credit.AuthorizeRequest(id=uuid.uuid4().hex, ts_ms=T0, call_id="c", account=account,
                                                         destination="49", request_uri="sip:49@x",
                                                         caller_uri="sip:a@x"), callback_for(account))
        await asyncio.wait_for(done.wait(), 5)
        client.close()
        for transport, _ in owners:
            transport.close()
        assert sorted(owners[0][1].accounts) == sorted(by_part[0])
        assert sorted(owners[1][1].accounts) == sorted(by_part[1])
        assert all(answers[a] is not None for a in by_part[0] + by_part[1])
        assert all(answers[a] is None for a in by_part[2]), "no owner: on_error after the retries"

    asyncio.run(scenario())
