"""``ledger check``'s reconciliation (billing/ledger/check.py), pure: CDR legs against debits."""
from __future__ import annotations

from decimal import Decimal as D

from billing.ledger.accounts import AccountInfo
from billing.ledger.check import reconcile
from billing.ledger.events import debit_id
from billing.rating.model import Rate, RatePlan, RatesSnapshot, rate_call
from proxy.contract.ledger import LedgerEvent

NOV = 1793491200000                 # 2026-11-01T00:00:00Z
CREATED = NOV + 3_600_000           # the account exists from 01:00
PLAN = RatePlan("p", [Rate(prefix="49", price_per_min=D("0.60"), currency="EUR", first_increment=1,
                           next_increment=1)])
RATES = RatesSnapshot(1, {"p": PLAN}, {"alice@a.test": "p"})
ALICE = AccountInfo(id="alice@a.test", created_ms=CREATED)


def leg(n: int, answer_ms: int, duration_ms: int = 61_000) -> dict:
    return {"cdr_id": f"cdr-{n}", "leg": 0, "account": ALICE.id, "dialled": "sip:4930123@a.test",
            "answer_ms": answer_ms, "duration_ms": duration_ms, "call_id": f"call-{n}"}


def debit(row: dict) -> LedgerEvent:
    cost = rate_call(PLAN, "4930123", row["answer_ms"], row["duration_ms"]).total
    return LedgerEvent(id=debit_id(row["cdr_id"], 0), account=ALICE.id, kind="debit", amount=cost, currency="EUR",
                       ts_ms=row["answer_ms"] + row["duration_ms"], cdr_id=row["cdr_id"], leg=0,
                       answer_ms=row["answer_ms"])


def check(legs, debits):
    return reconcile(legs, debits, {ALICE.id: ALICE}, RATES, from_ms=NOV, to_ms=NOV + 86_400_000)


def test_calls_before_the_account_existed_are_not_missing_debits():
    before = leg(1, CREATED - 600_000)                         # answered 10 min before the account
    result = check([before], [])
    assert result.ok and result.differences == []
    assert [(s.kind, s.cdr_id) for s in result.skipped] == [("before_account", "cdr-1")]
    assert result.periods == []                                 # not billable: in no period's sums
    assert result.to_dict()["skipped"][0]["kind"] == "before_account"


def test_a_call_after_the_account_was_created_still_needs_its_debit():
    after = leg(2, CREATED + 1000)
    result = check([after], [])
    assert not result.ok and [d.kind for d in result.differences] == ["missing_debit"] and not result.skipped


def test_a_call_answered_before_but_debited_is_checked_like_any_other():
    """Its CDR came after the account was created: the debit is real and must match."""
    early = leg(3, CREATED - 5000)
    result = check([early, leg(4, CREATED + 5000)], [debit(early), debit(leg(4, CREATED + 5000))])
    assert result.ok and not result.skipped
    (period,) = result.periods
    assert period.cdr_legs == period.debits == 2 and period.difference == 0
    wrong = LedgerEvent(**{**{f: getattr(debit(early), f) for f in LedgerEvent.__struct_fields__},
                           "amount": D("9")})
    assert [d.kind for d in check([early], [wrong]).differences] == ["amount_mismatch"]


def test_debit_without_cdr_and_duplicates():
    row = leg(5, CREATED + 1000)
    result = check([], [debit(row), debit(row)])
    assert sorted(d.kind for d in result.differences) == ["debit_without_cdr", "duplicate_debit"]
