"""The ledger: exact money, deterministic ids, the fold (order- and duplicate-proof),
and the SQLite ledger appending each event id once."""
from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.errors import LedgerError
from billing.ledger.accounts import AccountInfo, build_account
from billing.ledger.events import Problem, debit_id, final_release_id, money_event, money_event_id, reservation_id
from billing.ledger.fold import fold
from billing.ledger.store import LedgerStore, ServiceLock, ServiceRunning
from billing.money import parse_amount
from proxy.contract.ledger import LedgerEvent, decode_event, encode_event

ACC = AccountInfo(id="alice@a.test", currency="EUR")


def ev(kind, amount, n, **kw):
    return LedgerEvent(id=f"e{n}", account=kw.pop("account", ACC.id), kind=kind, amount=D(amount),
                       currency="EUR", ts_ms=1000 + n, **kw)


# -- money -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("10", D("10")), ("-2.5", D("-2.5")), ("0.000001", D("0.000001")),
                                        ("+3.10", D("3.10")), ("1.5000000", D("1.5"))])
def test_parse_amount_exact(text, value):
    assert parse_amount(text) == value


@pytest.mark.parametrize("text", ["1e3", "0.0000001", "nan", "inf", "1,5", "", ".5", "5.", "--1",
                                  "1000000000000", 1.5, True, None])
def test_parse_amount_refuses(text):
    with pytest.raises(LedgerError):
        parse_amount(text)


def test_ids_are_deterministic_per_cause():
    assert debit_id("cdr-1", 0) == debit_id("cdr-1", 0) != debit_id("cdr-1", 1)
    assert money_event_id("topup", "a", "k") != money_event_id("adjustment", "a", "k")
    assert reservation_id("c", 0) != reservation_id("c", 1) != final_release_id("c")


def test_money_event_rules():
    top = money_event(ACC, "topup", D("10"), "pay-1", ts_ms=1)
    assert top.id == money_event(ACC, "topup", D("10"), "pay-1", ts_ms=999).id     # the key decides
    with pytest.raises(LedgerError):
        money_event(ACC, "topup", D("-1"), "k", ts_ms=1)
    with pytest.raises(LedgerError):
        money_event(ACC, "topup", D("1"), "", ts_ms=1)
    with pytest.raises(LedgerError) as exc:
        money_event(ACC, "adjustment", D("-5"), "k", ts_ms=1, balance=D("4"))
    assert exc.value.status == 409
    postpaid = AccountInfo(id="p@a.test", kind="postpaid", credit_limit=D("100"))
    money_event(postpaid, "adjustment", D("-50"), "k", ts_ms=1, balance=D("-40"))        # within the limit


def test_build_account_checks():
    info = build_account("bob@b.test", {"kind": "postpaid", "credit_limit": "50.00", "currency": "USD"},
                         existing=None, now_ms=5)
    assert (info.kind, info.credit_limit, info.currency, info.floor) == ("postpaid", D("50.00"), "USD", D("-50.00"))
    with pytest.raises(LedgerError):
        build_account("x@y", {"credit_limit": "5"}, existing=None, now_ms=1)      # prepaid with a limit
    with pytest.raises(LedgerError):
        build_account("x y", {}, existing=None, now_ms=1)
    with pytest.raises(LedgerError):
        build_account("x@y", {"currency": "euro"}, existing=None, now_ms=1)


# -- the fold ----------------------------------------------------------------------------------

def test_fold_balances_reservations_and_calls():
    events = [
        ev("topup", "10", 1, key="k1"),
        ev("reservation", "0.5", 2, call_id="c1", step=0, paid_ms=30000, answer_ms=5, number="49", plan="p"),
        ev("reservation", "0.3", 3, call_id="c1", step=1, paid_ms=48000),
        ev("debit", "0.75", 4, cdr_id="cdr1", leg=0, call_id="c1"),
        ev("release", "0.8", 5, call_id="c1", step=2, final=True, paid_ms=48000),
        ev("adjustment", "-1.25", 6, key="k2"),
        ev("refund", "0.75", 7, key="k3"),
        ev("reservation", "0.2", 8, call_id="c2", step=0, paid_ms=30000),
    ]
    state = fold(events)
    book = state.books[ACC.id]
    assert book.balance == D("10") - D("0.75") - D("1.25") + D("0.75")
    assert book.reserved == D("0.2")
    assert state.calls["c1"].final and state.calls["c1"].reserved == 0
    assert set(state.open_calls()) == {"c2"}
    assert state.calls["c1"].answer_ms == 5 and state.calls["c1"].steps == 3


def test_fold_applies_each_id_once():
    events = [ev("topup", "10", 1), ev("debit", "3", 2), ev("debit", "3", 2), ev("topup", "10", 1)]
    state = fold(events)
    assert state.books[ACC.id].balance == D("7")
    assert state.duplicates == 2


_kinds = st.sampled_from(["topup", "adjustment", "refund", "debit", "reservation", "release"])
_amounts = st.decimals(min_value=D("-500"), max_value=D("500"), places=6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_kinds, _amounts, st.sampled_from(["a", "b", "c"])), max_size=40), st.randoms())
def test_fold_is_order_and_duplicate_independent(items, rnd):
    """Replayed (duplicated) and reordered events fold to the same balances:
    at-least-once delivery cannot change money."""
    events = [LedgerEvent(id=f"e{i}", account=acct, kind=kind, amount=abs(amount) if kind != "adjustment" else amount,
                          currency="EUR", ts_ms=i, call_id=f"c{i % 3}") for i, (kind, amount, acct) in enumerate(items)]
    replayed = events + [rnd.choice(events) for _ in range(len(events))] if events else []
    rnd.shuffle(replayed)
    a, b = fold(events), fold(replayed)
    assert {k: (v.balance, v.reserved) for k, v in a.books.items()} == \
        {k: (v.balance, v.reserved) for k, v in b.books.items()}
    # exact: the balance is the plain sum of the signed amounts, no rounding anywhere
    for acct, book in a.books.items():
        expect = sum((e.amount if e.kind in ("topup", "adjustment", "refund") else -e.amount if e.kind == "debit" else 0
                      for e in events if e.account == acct), D(0))
        assert book.balance == expect


# -- the SQLite ledger -------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    s = LedgerStore(f"sqlite:///{tmp_path}/billing.sqlite")
    s.create_schema()
    yield s
    s.close()


def test_store_appends_each_id_once_and_publishes_in_order(store):
    store.put_account(ACC, create=True)
    events = [money_event(ACC, "topup", D("10.000001"), "k1", ts_ms=1), ev("debit", "0.30000", 2)]
    new = store.append(events + events[:1])                   # a duplicate inside one batch too
    assert [e.seq for e in new] == [1, 2]
    again = store.append(events + [ev("debit", "0.1", 3)], outbox=[("billing.notifications", ACC.id, b"{}")],
                         problems=[Problem(id="p1", ts_ms=1, account=ACC.id, reason="x")] * 2)
    assert [(e.id, e.seq) for e in again] == [("e3", 3)]
    back = list(store.iter_events(chunk=2))
    assert [e.amount for e in back] == [D("10.000001"), D("0.30000"), D("0.1")]
    assert fold(back).books[ACC.id].balance == D("9.600001")
    assert decode_event(encode_event(back[1])).amount == D("0.30000")      # exact text through Kafka JSON
    assert len(store.problems()) == 1
    # the ledger is its own outbox: a cursor per topic
    assert [e.seq for e in store.unpublished("ledger.events", limit=2)] == [1, 2]
    store.mark_published("ledger.events", 2)
    store.mark_published("ledger.events", 1)                   # never goes back
    assert [e.seq for e in store.unpublished("ledger.events")] == [3]
    assert [e.seq for e in store.unpublished("elsewhere")] == [1, 2, 3]
    rows = store.outbox_batch()
    assert [(r[1], r[2]) for r in rows] == [("billing.notifications", ACC.id)]
    store.outbox_delete(rows[-1][0])
    assert store.outbox_size() == 0
    with pytest.raises(LedgerError):
        store.delete_account(ACC.id)                                # it has history


def test_store_account_currency_is_fixed_once_used(store):
    store.put_account(ACC, create=True)
    store.append([money_event(ACC, "topup", D("1"), "k", ts_ms=1)])
    with pytest.raises(LedgerError):
        store.put_account(AccountInfo(id=ACC.id, currency="USD"), create=False)
    with pytest.raises(LedgerError):
        store.put_account(ACC, create=True)


def test_service_lock_is_exclusive(tmp_path):
    with ServiceLock(tmp_path):
        assert ServiceLock(tmp_path).held_elsewhere()      # flock: per open file, even in one process
        other = ServiceLock(tmp_path)
        with pytest.raises(ServiceRunning):
            other.acquire()
    ServiceLock(tmp_path).acquire().release()
