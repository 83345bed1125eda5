"""The billing service (``python -m billing``) against the real Tansu broker:
authorization over UDP, a call exhausting its credit torn down on
``call.control`` within its paid time + 1 s, CDRs debited exactly once through
duplicates, replays and a SIGKILL + restart, balances rebuilt from the SQLite
ledger, and a broker restart that loses nothing."""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from decimal import Decimal as D

import pytest

from billing.client import BillingClient
from billing.ledger.fold import fold
from billing.ledger.store import LedgerStore
from billing.rating.model import max_duration, rate_call
from proxy.contract import credit
from proxy.contract.commands import Teardown
from proxy.contract.ledger import decode_event
from proxy.infra.clock import now_ms
from proxy.infra.config import BillingSettings
from tests.harness.billing import (
    BillingProcess,
    ControlReader,
    Topics,
    answered,
    bye,
    cdr_leg,
    create_topics,
    encode_cdr,
    invite,
    provision_plan,
    simple_plan,
)
from tests.harness.broker import produce, read_all, settings_for

pytestmark = pytest.mark.integration

ALICE = "alice@example.test"
NUMBER = "4930123456"


def authorize(port: int, account: str, call_id: str | None = None, number: str = NUMBER):
    request = credit.AuthorizeRequest(id=uuid.uuid4().hex, ts_ms=now_ms(), call_id=call_id or uuid.uuid4().hex,
                                      account=account, destination=number,
                                      request_uri=f"sip:{number}@example.test", caller_uri=f"sip:{account}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(credit.encode(request), ("127.0.0.1", port))
        return credit.decode_response(sock.recv(4096))


@pytest.fixture
def setup(tmp_path, broker):
    """A data dir with alice's plan (0.60/min, 1 s increments), unique topics, a config file."""
    topics = Topics()
    kafka = settings_for(broker)
    asyncio.run(create_topics(kafka, topics))
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "sipledger.toml"
    config.write_text(topics.config())
    plan = simple_plan()
    provision_plan(data, ALICE, plan)
    client = BillingClient(data)
    client.put_account(ALICE, {"kind": "prepaid", "currency": "EUR"}, create=True)
    procs: list[BillingProcess] = []

    def start() -> BillingProcess:
        proc = BillingProcess(data, config, broker.bootstrap).start()
        procs.append(proc)
        return proc

    yield type("Setup", (), dict(topics=topics, kafka=kafka, data=data, plan=plan, client=client,
                                 start=staticmethod(start), config=config))
    for proc in procs:
        proc.kill()


def ledger(data) -> LedgerStore:
    store = LedgerStore(BillingSettings().database_url(data))
    store.create_schema()
    return store


@pytest.mark.clock
def test_authorization_over_udp(setup):
    svc = setup.start()
    assert (setup.data / "run" / "credit.port").read_text() == f"{svc.port}\n"
    refused = authorize(svc.port, ALICE)
    assert (refused.allowed, refused.code) == (False, 402)
    result = setup.client.money(ALICE, "topup", "1.00", "pay-1")         # through the service's RPC
    assert result["balance"] == "1.00" and result["replayed"] is False
    again = setup.client.money(ALICE, "topup", "1.00", "pay-1")
    assert again["replayed"] is True and again["balance"] == "1.00"
    allowed = authorize(svc.port, ALICE)
    expected = max_duration(setup.plan, NUMBER, now_ms(), D("1.00"))
    assert allowed.allowed and allowed.max_duration_s == expected == 100
    unknown = authorize(svc.port, "nobody@example.test")
    assert unknown.allowed and unknown.max_duration_s is None
    assert authorize(svc.port, ALICE, number="3312345").code == 403        # no rate to France
    setup.client.put_account(ALICE, {"status": "blocked"}, create=False)
    assert authorize(svc.port, ALICE).code == 402
    assert svc.stop() == 0


async def _call_exhausts(setup, svc, credit_amount: str):
    kafka, topics = setup.kafka, setup.topics
    reader = ControlReader(kafka, topics.call_control)
    await reader.start()
    try:
        call_id = f"exhaust-{uuid.uuid4().hex}"
        t0 = now_ms()
        await produce(kafka, topics.sip_events, [(call_id.encode(), invite(call_id, ALICE, NUMBER, t0))])
        answer = now_ms()
        await produce(kafka, topics.sip_events, [(call_id.encode(), answered(call_id, answer))])
        paid_until = answer + max_duration(setup.plan, NUMBER, answer, D(credit_amount)) * 1000
        got = await reader.wait_for(call_id, timeout=30)
        assert got is not None, "no teardown on call.control"
        arrived, command = got
        assert isinstance(command, Teardown) and command.reason == "credit exhausted"
        lateness = arrived * 1000 - paid_until
        assert -1000 <= lateness <= 1000, f"teardown {lateness:+.0f} ms from the paid time"
        end = int(arrived * 1000)              # the proxy ends the call when the command arrives
        await produce(kafka, topics.sip_events, [(call_id.encode(), bye(call_id, end))])
        await produce(kafka, topics.cdr, [(b"k", encode_cdr(cdr_leg(call_id, ALICE, NUMBER, answer, end)))])
        return call_id, answer, end, lateness
    finally:
        await reader.stop()


@pytest.mark.clock
def test_call_exhausting_credit_is_torn_down_in_time(setup):
    setup.client.money(ALICE, "topup", "0.05", "five-seconds")          # 5 s at 0.60/min
    svc = setup.start()
    call_id, answer, end, lateness = asyncio.run(_call_exhausts(setup, svc, "0.05"))
    cost = rate_call(setup.plan, NUMBER, answer, end - answer).total
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        snap = setup.client.balance(ALICE)
        if snap["reserved"] in ("0", "0.0000") and D(snap["balance"]) == D("0.05") - cost:
            break
        time.sleep(0.1)
    assert D(snap["balance"]) == D("0.05") - cost and D(snap["reserved"]) == 0, snap
    increment = rate_call(setup.plan, NUMBER, answer, 2000).total - rate_call(setup.plan, NUMBER, answer, 1000).total
    assert D(snap["balance"]) >= -increment                            # overdraft <= one increment
    assert D(snap["balance"]) <= increment                             # and the credit was used up
    assert svc.stop() == 0
    with ledger(setup.data) as store:
        assert len(store.events(kinds=["debit"])) == 1


def test_every_call_debited_once_through_duplicates_kill_and_restart(setup):
    setup.client.money(ALICE, "topup", "50", "big")
    kafka, topics = setup.kafka, setup.topics
    svc = setup.start()
    base = now_ms() - 600_000
    calls = [(f"dup-{i}-{uuid.uuid4().hex[:6]}", base + i * 1000, base + i * 1000 + 7_000 + i * 1_333)
             for i in range(12)]
    legs = [cdr_leg(cid, ALICE, NUMBER, a, e) for cid, a, e in calls]
    records = [(leg.cdr_id.encode(), encode_cdr(leg)) for leg in legs]
    asyncio.run(produce(kafka, topics.cdr, records[:6] + records[:6]))        # duplicates
    time.sleep(1.0)
    svc.kill()                                                                 # SIGKILL mid-stream
    asyncio.run(produce(kafka, topics.cdr, records))                           # the rest + replays
    svc = setup.start()
    asyncio.run(produce(kafka, topics.cdr, records[3:9]))                      # more replays
    expected = sum((rate_call(setup.plan, NUMBER, a, e - a).total for _, a, e in calls), D(0))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with ledger(setup.data) as store:
            debits = store.events(kinds=["debit"])
        if len(debits) >= len(calls):
            break
        time.sleep(0.2)
    time.sleep(1.5)                                                            # let any extra debit show
    with ledger(setup.data) as store:
        debits = store.events(kinds=["debit"])
        state = fold(store.iter_events())
    assert len(debits) == len(calls)
    assert {(d.cdr_id, d.leg) for d in debits} == {(leg.cdr_id, 0) for leg in legs}
    assert sum((d.amount for d in debits), D(0)) == expected
    assert state.books[ALICE].balance == D("50") - expected
    live = setup.client.balance(ALICE)
    assert live["live"] and D(live["balance"]) == D("50") - expected
    # a clean restart rebuilds the same balance from the SQLite ledger alone
    assert svc.stop() == 0
    svc = setup.start()
    assert D(setup.client.balance(ALICE)["balance"]) == D("50") - expected
    # ledger.events got every event (outbox), key = account
    assert svc.stop() == 0
    published = asyncio.run(read_all(kafka, topics.ledger, at_least=len(calls) + 1, timeout=20))
    kinds = {}
    for record in published:
        event = decode_event(record.value)
        kinds[event.id] = event.kind
        assert record.key == ALICE.encode() and event.seq > 0
    assert sorted(kinds.values()).count("debit") == len(calls) and "topup" in kinds.values()


@pytest.mark.clock
def test_restart_keeps_live_reservations(setup):
    """A call answered, the service killed: its reservation comes back from the
    ledger, and the CDR arriving after the restart releases it."""
    setup.client.money(ALICE, "topup", "10", "t")
    kafka, topics = setup.kafka, setup.topics
    svc = setup.start()
    call_id = f"live-{uuid.uuid4().hex}"
    answer = now_ms()
    asyncio.run(produce(kafka, topics.sip_events, [(call_id.encode(), invite(call_id, ALICE, NUMBER, answer - 500)),
                                                   (call_id.encode(), answered(call_id, answer))]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and setup.client.balance(ALICE)["reserved"] in ("0", "0.0000"):
        time.sleep(0.1)
    reserved = D(setup.client.balance(ALICE)["reserved"])
    # the first 30 s from when the answer was processed (a little after the answer itself)
    assert rate_call(setup.plan, NUMBER, answer, 30_000).total <= reserved \
        <= rate_call(setup.plan, NUMBER, answer, 33_000).total
    time.sleep(0.5)                                         # the reservation reaches the ledger
    svc.kill()
    svc = setup.start()
    snap = setup.client.balance(ALICE)
    assert D(snap["reserved"]) == reserved and snap["active_calls"][0]["call_id"] == call_id
    end = answer + 12_345
    asyncio.run(produce(kafka, topics.sip_events, [(call_id.encode(), bye(call_id, end))]))
    asyncio.run(produce(kafka, topics.cdr, [(b"x", encode_cdr(cdr_leg(call_id, ALICE, NUMBER, answer, end)))]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        snap = setup.client.balance(ALICE)
        if D(snap["reserved"]) == 0:
            break
        time.sleep(0.1)
    assert D(snap["reserved"]) == 0
    assert D(snap["balance"]) == D("10") - rate_call(setup.plan, NUMBER, answer, 12_345).total
    assert svc.stop() == 0


def test_broker_restart_loses_nothing(tmp_path, fresh_broker):
    """The broker (memory only) restarts: every topic is gone.  The service
    starts a new Kafka session, money already in the ledger stays, and calls
    after the restart are debited."""
    topics = Topics()
    kafka = settings_for(fresh_broker)
    asyncio.run(create_topics(kafka, topics))
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "sipledger.toml"
    config.write_text(topics.config())
    plan = simple_plan()
    provision_plan(data, ALICE, plan)
    client = BillingClient(data)
    client.put_account(ALICE, {"kind": "prepaid", "currency": "EUR"}, create=True)
    client.money(ALICE, "topup", "20", "t")
    svc = BillingProcess(data, config, fresh_broker.bootstrap).start()
    try:
        t = now_ms() - 60_000
        first = cdr_leg("before-restart", ALICE, NUMBER, t, t + 30_000)
        asyncio.run(produce(kafka, topics.cdr, [(b"a", encode_cdr(first))]))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and D(client.balance(ALICE)["balance"]) == D("20"):
            time.sleep(0.1)
        fresh_broker.restart()
        asyncio.run(create_topics(kafka, topics))
        second = cdr_leg("after-restart", ALICE, NUMBER, t, t + 60_000)
        expected = D("20") - D("0.3") - D("0.6")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            asyncio.run(produce(kafka, topics.cdr, [(b"b", encode_cdr(second))]))     # until consumed
            if D(client.balance(ALICE)["balance"]) == expected:
                break
            time.sleep(1.0)
        assert D(client.balance(ALICE)["balance"]) == expected
        with ledger(data) as store:
            assert len(store.events(kinds=["debit"])) == 2
        assert svc.stop() == 0
    finally:
        svc.kill()


RERATE_T0 = 1_772_445_600_000          # 2026-03-02T10:00:00Z: the rerated calls' answers, fixed


def test_rerate_through_the_running_service(setup):
    """`rerate` while the service holds the ledger: the command runs in the service (RPC),
    its corrections reach the live balances at once, a repeat changes nothing, and
    rerating with the old rates back restores the balance exactly."""
    setup.client.money(ALICE, "topup", "50", "rerate-pay")
    svc = setup.start()
    calls = [(f"rr-{i}-{uuid.uuid4().hex[:6]}", RERATE_T0 + i * 60_000, RERATE_T0 + i * 60_000 + 30_000 + i * 7_500)
             for i in range(4)]
    legs = [cdr_leg(cid, ALICE, NUMBER, a, e) for cid, a, e in calls]
    asyncio.run(produce(setup.kafka, setup.topics.cdr, [(leg.cdr_id.encode(), encode_cdr(leg)) for leg in legs]))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with ledger(setup.data) as store:
            if len(store.events(kinds=["debit"])) >= len(legs):
                break
        time.sleep(0.2)
    original = D(setup.client.balance(ALICE)["balance"])
    assert original == D("50") - sum((rate_call(setup.plan, NUMBER, a, e - a).total for _, a, e in calls), D(0))
    period = (RERATE_T0, RERATE_T0 + 3600_000)

    provision_plan(setup.data, ALICE, simple_plan("1.20"))                  # rates changed: double
    assert setup.client.service_running()
    run = setup.client.rerate(*period, who="test")                          # through the service's RPC
    assert (run["calls"], run["changed"]) == (4, 4) and D(run["delta"]) == D("50") - original
    live = setup.client.balance(ALICE)
    assert live["live"] and D(live["balance"]) == original - (D("50") - original)
    assert setup.client.rerate(*period)["changed"] == 0                     # the same rerate: no change
    provision_plan(setup.data, ALICE, simple_plan("0.60"))
    assert setup.client.rerate(*period)["changed"] == 4
    assert D(setup.client.balance(ALICE)["balance"]) == original            # exactly
    assert svc.stop() == 0
    with ledger(setup.data) as store:
        assert fold(store.iter_events()).books[ALICE].balance == original
        assert len(store.events(kinds=["rerate"])) == 8 and len(store.runs()) == 3
