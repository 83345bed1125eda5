"""The money commands (billing/application.py) on the SQL ledger -- the path the CLI
takes when no billing service runs; the service runs the same commands on its live
state (tests/integration/test_billing_service.py)."""
from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest

from billing.application import BillingApplication, StoredLedger
from billing.errors import LedgerError
from billing.ledger.store import LedgerStore
from billing.rpc import RpcRequest
from proxy.contract.ledger import LedgerEvent

ALICE = "alice@a.test"


@pytest.fixture
def app(tmp_path):
    store = LedgerStore(f"sqlite:///{tmp_path}/billing.sqlite")
    store.create_schema()
    yield BillingApplication(StoredLedger(store), default_currency="EUR")
    store.close()


def run(app, op, status=None, **fields):
    request = RpcRequest(op=op, **fields)
    if status is None:
        return asyncio.run(app.execute(request))
    with pytest.raises(LedgerError) as refused:
        asyncio.run(app.execute(request))
    assert refused.value.status == status, refused.value
    return str(refused.value)


def test_accounts(app):
    created = run(app, "account.put", account=ALICE, create=True, fields={"kind": "prepaid"})
    assert created["id"] == ALICE and created["currency"] == "EUR" and created["created_ms"] > 0
    run(app, "account.put", 409, account=ALICE, create=True)
    run(app, "account.put", 404, account="bob@b.test", create=False, fields={"status": "blocked"})
    run(app, "account.put", 422, account=ALICE, create=False, fields={"credit_limit": "5"})   # prepaid
    assert run(app, "account.put", account=ALICE, create=False, fields={"name": "Alice"})["name"] == "Alice"
    assert run(app, "account.delete", account=ALICE) == {"deleted": ALICE}
    run(app, "balance", 404, account=ALICE)
    run(app, "teleport", 400)
    assert run(app, "ping") == {"live": False}


def test_money_exactly_once_and_the_floor(app):
    run(app, "account.put", account=ALICE, create=True)
    topup = run(app, "money", account=ALICE, kind="topup", amount="12.50", key="pay-1")
    assert not topup["replayed"] and topup["balance"] == "12.50" and topup["event"]["amount"] == "12.50"
    again = run(app, "money", account=ALICE, kind="topup", amount="12.50", key="pay-1")
    assert again["replayed"] and again["event"]["id"] == topup["event"]["id"] and again["balance"] == "12.50"
    assert "pay-1" in run(app, "money", 409, account=ALICE, kind="topup", amount="99", key="pay-1")
    assert "below 0" in run(app, "money", 409, account=ALICE, kind="adjustment", amount="-13", key="fix")
    run(app, "money", 422, account=ALICE, kind="topup", amount="1.0000001", key="exact")    # never rounded
    run(app, "money", 404, account="bob@b.test", kind="topup", amount="1", key="k")
    assert run(app, "money", account=ALICE, kind="adjustment", amount="-12.5", key="fix")["balance"] == "0.00"
    # a replay is answered, not checked again (the balance is 0 now)
    assert run(app, "money", account=ALICE, kind="adjustment", amount="-12.5", key="fix")["replayed"]


def test_balance_folds_open_calls(app):
    run(app, "account.put", account=ALICE, create=True)
    run(app, "money", account=ALICE, kind="topup", amount="10", key="t")
    store = app.repository.store
    store.append([LedgerEvent(id="r0", account=ALICE, kind="reservation", amount=D("0.30"), currency="EUR",
                              ts_ms=1, call_id="call-1", paid_ms=30_000, answer_ms=1, number="4930")])
    view = run(app, "balance", account=ALICE)
    assert (view["balance"], view["reserved"], view["available"], view["live"]) == ("10", "0.30", "9.70", False)
    assert view["active_calls"] == [{"call_id": "call-1", "answer_ms": 1, "paid_ms": 30_000, "reserved": "0.30",
                                     "exhausted": False, "number": "4930"}]
