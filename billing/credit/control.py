"""Credit control: the state machine behind authorization, live reservations and
teardowns.  Pure: no I/O, no clock (every method takes ``now_ms``); the billing
service (billing/credit/service.py) runs it and carries out its ``Effects``.

Per account it keeps ``balance`` (the ledger's fold), ``reserved`` (what live
calls hold) and ``held`` (authorizations not answered yet), so

    available = balance + credit_limit (postpaid) - reserved - held

is what a new call or an extension may take.  One account's calls share it:
a credit can only be reserved once, whichever call asks first.

Life of a call (CGRateS / cnxcc style):

1. ``authorize`` (the proxy's INVITE): refused (402 by default) when the
   account is blocked or ``available`` does not cover the first increment +
   connect fee; otherwise allowed with ``max_duration_s`` = what ``available``
   lasts at that destination's rate (``rating.max_duration``), and the first
   increment's cost is *held* for the call until it is answered or fails.
2. ``answered``: the hold becomes a ledger *reservation* covering the first
   ``reserve_seconds`` (or as much of it as is affordable, but never less than
   the first increment + connect fee: an answered call owes that however soon
   it ends, even if an overrun elsewhere left ``available`` short of it).  Reservations are
   always ``rating.rate_call``'s cost of the covered time, so the connect
   fee, increments and period splits are exactly what the debit will be.
3. ``extend_ahead_seconds`` before the paid time runs out the reservation is
   extended by the next ``reserve_seconds`` if ``available`` allows, else by
   what it allows; when nothing more can be reserved the call is *exhausted*:
   a ``Teardown`` ("credit exhausted") is timed ``teardown_lead_ms`` before
   the paid time ends, so the call ends within the time it paid for (and a
   late teardown overruns by less than one increment).  A top-up before then
   revives the call; an adjustment that leaves ``available`` < 0 shrinks the
   newest calls' reservations at once and tears them down now.
4. The CDR (``plan_cdr``) is rated with ``rating.rate_call`` and debited once
   (id = (cdr_id, leg)); the same transaction releases the call's whole
   reservation ("final" release).  An ended call whose CDR does not come within
   ``cdr_wait_seconds`` is released anyway (and reported as a problem).

Event kinds: proxy/contract/ledger.py; ids: billing/ledger/events.py.  Reservations and releases are decided
here and applied at once ("memory first"); the service then persists them.
Debits, top-ups and adjustments are persisted first (their ids decide whether
they are new) and applied with ``apply_external``.
"""
from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from billing.errors import LedgerError
from billing.ledger.accounts import AccountInfo, balance_view
from billing.ledger.events import Problem, debit_id, event_id, final_release_id, release_id, reservation_id
from billing.ledger.fold import balance_delta, fold, reserved_delta
from billing.money import ZERO, check_amount
from billing.rating.model import (
    DAY,
    RatePlan,
    RatesSnapshot,
    RatingError,
    first_cost,
    max_duration,
    normalize_number,
    number_from_uri,
    rate_call,
)
from proxy.contract import commands
from proxy.contract.cdr import CdrLeg
from proxy.contract.credit import AuthorizeRequest, AuthorizeResponse
from proxy.contract.ledger import Kind, LedgerEvent, Notification
from proxy.infra.config import CreditSettings

__all__ = ["CreditControl", "Effects", "Call", "Hold", "Live", "EXHAUSTED", "BLOCKED"]

EXHAUSTED = "credit exhausted"
BLOCKED = "account blocked"
TEARDOWN_CAUSE = 402
TEARDOWN_TRIES = 3
FINISHED_HORIZON_MS = 24 * 3600 * 1000
RESPONSE_TTL_MS = 60_000
REBALANCE_KEEP_MS = 1000          # an over-spent call keeps this much time to be torn down in


@dataclass
class Effects:
    """What the service must do after a state change."""
    events: list[LedgerEvent] = field(default_factory=list)        # applied already: persist them
    commands: list[commands.ControlCommand] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    timers: dict[str, int | None] = field(default_factory=dict)     # call_id -> due epoch ms / None
    problems: list[Problem] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.commands or self.notifications or self.timers or self.problems)

    def merge(self, other: "Effects") -> "Effects":
        self.events += other.events
        self.commands += other.commands
        self.notifications += other.notifications
        self.timers.update(other.timers)
        self.problems += other.problems
        return self


class Live:
    """One account's live money."""
    __slots__ = ("balance", "reserved", "held", "calls", "low_armed")

    def __init__(self, balance: Decimal = ZERO, reserved: Decimal = ZERO):
        self.balance = balance
        self.reserved = reserved
        self.held = ZERO
        self.calls: set[str] = set()
        self.low_armed: set[Decimal] = set()      # thresholds the balance is below (notified)


class Hold:
    __slots__ = ("call_id", "account", "amount", "number", "plan", "expires_ms")

    def __init__(self, call_id: str, account: str, amount: Decimal, number: str, plan: RatePlan,
                 expires_ms: int):
        self.call_id, self.account, self.amount = call_id, account, amount
        self.number, self.plan, self.expires_ms = number, plan, expires_ms


class Call:
    """A live call under credit control."""
    __slots__ = ("call_id", "account", "plan", "number", "answer_ms", "paid_ms", "reserved", "steps",
                 "ended", "end_ms", "closing", "exhausted", "teardowns", "due_ms", "action", "reason")

    def __init__(self, call_id: str, account: str, plan: RatePlan, number: str, answer_ms: int):
        self.call_id, self.account, self.plan, self.number = call_id, account, plan, number
        self.answer_ms = answer_ms
        self.paid_ms = 0               # call time (from answer) the reservation pays for
        self.reserved = ZERO           # = rate_call(plan, number, answer_ms, paid_ms).total
        self.steps = 0                 # reservation/release events so far (their ids)
        self.ended = False
        self.end_ms = 0
        self.closing = False           # its CDR is being debited: no more changes
        self.exhausted = False         # nothing more could be reserved: teardown timed
        self.teardowns = 0
        self.due_ms: int | None = None
        self.action: str | None = None  # extend | teardown | expire
        self.reason = EXHAUSTED

    @property
    def paid_until_ms(self) -> int:
        return self.answer_ms + self.paid_ms


def _command_id(*parts: object) -> str:
    return uuid.UUID(event_id("command", *parts)).hex


class CreditControl:
    def __init__(self, settings: CreditSettings = CreditSettings(), *, default_plan: str = ""):
        self.settings = settings
        self.default_plan = default_plan
        self.reserve_ms = settings.reserve_seconds * 1000
        self.ahead_ms = int(settings.extend_ahead_seconds * 1000)
        self.lead_ms = settings.teardown_lead_ms
        self.retry_ms = int(settings.teardown_retry_seconds * 1000)
        self.hold_ms = int(settings.hold_seconds * 1000)
        self.cdr_wait_ms = int(settings.cdr_wait_seconds * 1000)
        self.max_call_ms = int(settings.max_call_seconds * 1000)
        self.thresholds = settings.thresholds
        self.accounts: dict[str, AccountInfo] = {}
        self.books: dict[str, Live] = {}
        self.holds: dict[str, Hold] = {}
        self.calls: dict[str, Call] = {}
        self.finished: dict[str, int] = {}
        self.rates = RatesSnapshot(version=-1, plans={}, accounts={})
        self._responses: dict[str, tuple[AuthorizeResponse, int]] = {}
        # expiry queues in insertion order (constant TTLs): sweeping pops only what is due
        self._hold_expiry: deque[tuple[int, str]] = deque()
        self._response_expiry: deque[tuple[int, str]] = deque()
        self._next_call_sweep = 0
        self.stats: dict[str, int] = {}

    # -- set-up ----------------------------------------------------------------------------
    def set_rates(self, snapshot: RatesSnapshot, default_plan: str | None = None) -> None:
        """New rates apply to new calls; live calls keep the plan they started with."""
        self.rates = snapshot
        if default_plan is not None:
            self.default_plan = default_plan

    def load(self, accounts: Iterable[AccountInfo], events: Iterable[LedgerEvent], now_ms: int) -> Effects:
        """Rebuild the state from the durable ledger (at start): balances and
        reservations are the fold of the events; calls that still hold a
        reservation are live again and get their timers back."""
        self.accounts, self.books = {}, {}
        self.calls, self.holds, self.finished = {}, {}, {}
        return self.adopt(accounts, events, now_ms)

    def adopt(self, accounts: Iterable[AccountInfo], events: Iterable[LedgerEvent], now_ms: int) -> Effects:
        """Take these accounts over (``load`` for some of them): their state is
        the fold of their events, their live calls get their timers back.  A
        billing instance that gains a partition adopts its accounts; ``events``
        are all the ledger events of exactly those accounts."""
        fx = Effects()
        adopted = {a.id: a for a in accounts}
        self.accounts.update(adopted)
        state = fold(events)
        for account_id, book in state.books.items():
            self.books[account_id] = Live(book.balance, book.reserved)
        for info in adopted.values():
            live = self._live(info.id)
            live.low_armed = {t for t in self.thresholds if live.balance < t}
        for call_id, res in state.calls.items():
            if res.final:
                if res.last_ms >= now_ms - FINISHED_HORIZON_MS:
                    self.finished[call_id] = res.last_ms
                continue
            plan = self.rates.plans.get(res.plan) or self._plan(res.account)
            if plan is None:        # its plan is gone: it can still be released and torn down
                self._count("restored_without_plan")
                plan = RatePlan(res.plan or "deleted")
            call = Call(call_id, res.account, plan, res.number, res.answer_ms)
            call.paid_ms, call.reserved, call.steps = res.paid_ms, res.reserved, res.steps
            self.calls[call_id] = call
            self._live(res.account).calls.add(call_id)
            if now_ms - call.answer_ms > self.max_call_ms:
                self._ended(call, now_ms, now_ms, fx)
            else:
                self._schedule(call, "extend", max(now_ms, call.paid_until_ms - self.ahead_ms), fx)
        return fx

    def drop(self, owned: Callable[[str], bool]) -> list[str]:
        """Forget every account ``owned`` says is no longer ours (a partition
        went to another instance, which rebuilds them from the ledger); returns
        the Call-IDs whose timers must stop."""
        gone = {a for a in set(self.accounts) | set(self.books) if not owned(a)}
        for account in gone:
            self.accounts.pop(account, None)
            self.books.pop(account, None)
        for call_id in [c for c, h in self.holds.items() if h.account in gone]:
            del self.holds[call_id]
        calls = [c for c, call in self.calls.items() if call.account in gone]
        for call_id in calls:
            del self.calls[call_id]
        return calls

    def upsert_account(self, info: AccountInfo, now_ms: int) -> Effects:
        """A new or changed account.  Blocking it tears its live calls down; a
        lower credit limit may leave ``available`` < 0 and shrink them."""
        fx = Effects()
        old = self.accounts.get(info.id)
        self.accounts[info.id] = info
        live = self._live(info.id)
        if old is None:
            live.low_armed = {t for t in self.thresholds if live.balance < t}
        if info.status == "blocked" and (old is None or old.status != "blocked"):
            for call in self._calls_of(info.id):
                if not call.closing and not call.ended:
                    call.reason = BLOCKED
                    self._send_teardown(call, now_ms, fx)
            self._drop_holds(info.id)
        elif self.available(info.id) < 0:
            self._rebalance(info.id, now_ms, fx)
        elif old is not None and (info.credit_limit > old.credit_limit or old.status == "blocked"):
            self._revive(info.id, now_ms, fx)
        return fx

    def remove_account(self, account: str) -> None:
        self.accounts.pop(account, None)
        self._drop_holds(account)

    # -- queries ---------------------------------------------------------------------------
    def available(self, account: str) -> Decimal:
        info = self.accounts.get(account)
        live = self.books.get(account)
        if info is None:
            return ZERO
        if live is None:
            return -info.floor
        return live.balance - info.floor - live.reserved - live.held

    def snapshot(self, info: AccountInfo) -> dict:
        """The account's live money, as the API shows it (amounts as text)."""
        live = self.books.get(info.id) or Live()
        return balance_view(info, balance=live.balance, reserved=live.reserved, held=live.held, live=True,
                            calls=[self.calls[c] for c in sorted(live.calls) if c in self.calls])

    # -- authorization (the hot path) ------------------------------------------------------------
    def authorize(self, req: AuthorizeRequest, now_ms: int) -> AuthorizeResponse:
        cached = self._responses.get(req.id)
        if cached is not None:
            return cached[0]
        response = self._authorize(req, now_ms)
        self._responses[req.id] = (response, now_ms + RESPONSE_TTL_MS)
        self._response_expiry.append((now_ms + RESPONSE_TTL_MS, req.id))
        self._count("authorized" if response.allowed else f"refused_{response.code}")
        return response

    def _authorize(self, req: AuthorizeRequest, now_ms: int) -> AuthorizeResponse:
        s = self.settings
        info = self.accounts.get(req.account)
        if info is None:
            if s.unknown_account == "allow":
                return AuthorizeResponse(id=req.id, allowed=True, reason="no billing account")
            return AuthorizeResponse(id=req.id, allowed=False, code=s.unknown_code,
                                     reason="no billing account")
        if info.status == "blocked":
            return AuthorizeResponse(id=req.id, allowed=False, code=s.blocked_code, reason=BLOCKED)
        plan = self._plan(info.id)
        if plan is None:
            return AuthorizeResponse(id=req.id, allowed=False, code=s.no_rate_code, reason="no rate plan")
        if plan.currency is not None and plan.currency != info.currency:
            return AuthorizeResponse(id=req.id, allowed=False, code=s.no_rate_code,
                                     reason=f"rate plan in {plan.currency}, account in {info.currency}")
        number = normalize_number(req.destination) if req.destination else number_from_uri(req.request_uri)
        old = self.holds.pop(req.call_id, None)      # the same call asking again
        live = self._live(info.id)
        if old is not None:
            live.held -= old.amount
        available = self.available(info.id)
        try:
            first = first_cost(plan, number, now_ms)
            seconds = max_duration(plan, number, now_ms, available) if available >= first else 0
            check_amount(first, "the first increment's cost")
        except (RatingError, LedgerError) as exc:
            return AuthorizeResponse(id=req.id, allowed=False, code=s.no_rate_code,
                                     reason=f"no rate: {exc}"[:200])
        if seconds <= 0:
            return AuthorizeResponse(id=req.id, allowed=False, code=s.reject_code,
                                     reason="insufficient credit")
        self.holds[req.call_id] = Hold(req.call_id, info.id, first, number, plan, now_ms + self.hold_ms)
        self._hold_expiry.append((now_ms + self.hold_ms, req.call_id))
        live.held += first
        return AuthorizeResponse(id=req.id, allowed=True, max_duration_s=seconds)

    # -- call events -----------------------------------------------------------------------
    def answered(self, call_id: str, account: str, number: str, answer_ms: int, now_ms: int) -> Effects:
        """The call was answered: its hold becomes a reservation of the first chunk."""
        fx = Effects()
        if call_id in self.calls or call_id in self.finished:
            self._count("duplicate_answer")
            return fx
        hold = self.holds.pop(call_id, None)
        if hold is not None:
            self._live(hold.account).held -= hold.amount
            account, number = hold.account, hold.number
        info = self.accounts.get(account)
        if info is None:
            return fx                               # not billed here: no control
        plan = hold.plan if hold is not None else self._plan(account)
        if plan is None or (plan.currency is not None and plan.currency != info.currency):
            fx.problems.append(Problem(id=event_id("problem", call_id, "unrated"), ts_ms=now_ms,
                                       account=account, call_id=call_id,
                                       reason="answered call has no usable rate plan"))
            return fx
        call = Call(call_id, account, plan, normalize_number(number), answer_ms)
        self.calls[call_id] = call
        self._live(account).calls.add(call_id)
        if info.status == "blocked":
            call.reason = BLOCKED
            self._reserve_to(call, call.paid_ms, now_ms, fx)    # records the call (0 reserved)
            self._send_teardown(call, now_ms, fx)
            return fx
        self._extend(call, now_ms, fx)
        return fx

    def ended(self, call_id: str, end_ms: int, now_ms: int) -> Effects:
        """The call is over (BYE, timeout, teardown, failure, media timeout,
        session expiry): its hold goes; its reservation stays until the CDR is
        debited (or cdr_wait_seconds pass).  ``end_ms`` is when it ended (a media
        timeout's last media, which can lie before the answer if no media ever
        came: the answer then).  What is charged comes from the CDR, which
        ends at the same time (proxy/contract/callfold.py)."""
        fx = Effects()
        hold = self.holds.pop(call_id, None)
        if hold is not None:
            self._live(hold.account).held -= hold.amount
        call = self.calls.get(call_id)
        if call is not None and not call.ended:
            self._ended(call, end_ms, now_ms, fx)
        elif call is not None:
            # a second end (a BYE, then the media timeout detected later with an
            # earlier last media): the earliest counts, as in the CDR
            call.end_ms = min(call.end_ms, max(end_ms, call.answer_ms))
        return fx

    def due(self, call_id: str, now_ms: int) -> Effects:
        """The call's timer fired."""
        fx = Effects()
        call = self.calls.get(call_id)
        if call is None or call.closing or call.due_ms is None:
            return fx
        if now_ms < call.due_ms:                     # early: a stale timer
            fx.timers[call_id] = call.due_ms
            return fx
        action, call.due_ms, call.action = call.action, None, None
        if action == "extend":
            self._extend(call, now_ms, fx)
        elif action == "teardown":
            self._send_teardown(call, now_ms, fx)
        elif action == "expire":
            self._expire(call, now_ms, fx)
        return fx

    def sweep(self, now_ms: int) -> Effects:
        """Housekeeping, about once a second: expired holds and answers, calls
        that outlived any possible dialog."""
        fx = Effects()
        expiry = self._hold_expiry
        while expiry and expiry[0][0] <= now_ms:
            expires, call_id = expiry.popleft()
            hold = self.holds.get(call_id)
            if hold is not None and hold.expires_ms == expires:     # not renewed / used since
                del self.holds[call_id]
                self._live(hold.account).held -= hold.amount
        expiry = self._response_expiry
        while expiry and expiry[0][0] <= now_ms:
            expires, rid = expiry.popleft()
            entry = self._responses.get(rid)
            if entry is not None and entry[1] == expires:
                del self._responses[rid]
        horizon = now_ms - FINISHED_HORIZON_MS
        while self.finished:                              # insertion order ~ finishing order
            call_id = next(iter(self.finished))
            if self.finished[call_id] >= horizon:
                break
            del self.finished[call_id]
        if now_ms >= self._next_call_sweep:               # hours-long limit: a look now and then
            self._next_call_sweep = now_ms + 30_000
            for call in list(self.calls.values()):
                if not call.ended and not call.closing and now_ms - call.answer_ms > self.max_call_ms:
                    self._ended(call, now_ms, now_ms, fx)
        return fx

    # -- CDRs and money ----------------------------------------------------------------------
    def plan_cdr(self, leg: CdrLeg, now_ms: int) -> tuple[list[LedgerEvent], Problem | None]:
        """The debit for a CDR leg (and the call's final release), not applied
        yet: persist them, then ``apply_external`` those that were new."""
        if leg.answer_ms <= 0 or leg.duration_ms <= 0:
            return [], None
        info = self.accounts.get(leg.account)
        if info is None:
            return [], None                              # not a billing account
        events: list[LedgerEvent] = []
        problem = None
        plan = self._plan(info.id)
        number = number_from_uri(leg.dialled) if leg.dialled else normalize_number(leg.callee_uri)
        try:
            if plan is None:
                raise RatingError("no rate plan")
            if plan.currency is not None and plan.currency != info.currency:
                raise RatingError(f"rate plan in {plan.currency}, account in {info.currency}")
            charge = rate_call(plan, number, leg.answer_ms, leg.duration_ms)
            check_amount(charge.total, "the call's cost")
        except (RatingError, LedgerError) as exc:
            problem = Problem(id=event_id("problem", leg.cdr_id, leg.leg), ts_ms=now_ms,
                              account=info.id, call_id=leg.call_id, cdr_id=leg.cdr_id, leg=leg.leg,
                              reason=f"not debited: {exc}"[:300])
        else:
            events.append(LedgerEvent(
                id=debit_id(leg.cdr_id, leg.leg), account=info.id, kind="debit", amount=charge.total,
                currency=info.currency, ts_ms=now_ms, call_id=leg.call_id, cdr_id=leg.cdr_id,
                leg=leg.leg, answer_ms=leg.answer_ms, number=charge.number, plan=plan.name,
                prefix=charge.prefix, rate_name=charge.name, gateway=leg.gateway,
                duration_ms=leg.duration_ms, billed_s=charge.billed_seconds))
        call = self.calls.get(leg.call_id)
        if call is not None and call.account == info.id:
            # planned again (same id, same amount) if persisting failed and the CDR comes again
            call.closing = True
            call.due_ms = call.action = None
            events.append(self._final_release(call, now_ms, note=""))
        return events, problem

    def cdr_done(self, events: list[LedgerEvent]) -> Effects:
        """Timers of calls whose final release was planned (``plan_cdr``) must stop."""
        fx = Effects()
        for ev in events:
            if ev.kind == "release" and ev.final:
                fx.timers[ev.call_id] = None
        return fx

    def apply_external(self, events: Iterable[LedgerEvent], now_ms: int) -> Effects:
        """Apply persisted events that were new (debits, final releases, top-ups,
        adjustments, refunds) and react: thresholds, over-spent calls, revived calls."""
        fx = Effects()
        touched: dict[str, Decimal] = {}
        for ev in events:
            live = self._live(ev.account)
            touched.setdefault(ev.account, live.balance)
            live.balance += balance_delta(ev)
            if ev.kind == "release" and ev.final:
                call = self.calls.pop(ev.call_id, None)
                if call is not None:
                    live.reserved -= call.reserved
                    live.calls.discard(ev.call_id)
                    fx.timers[ev.call_id] = None
                self.finished[ev.call_id] = now_ms
            elif ev.kind == "debit" and ev.call_id and ev.call_id not in self.calls:
                self.finished[ev.call_id] = now_ms      # a late "answered" must not reopen it
            elif ev.kind in ("reservation", "release"):
                live.reserved += reserved_delta(ev)      # not expected here; keep the fold right
        for account, before in touched.items():
            self._after_money(account, before, now_ms, fx)
        return fx

    def undo(self, event: LedgerEvent) -> None:
        """A memory-first event the durable ledger already had (a replay that
        slipped through): take its effect back so memory equals the fold."""
        live = self._live(event.account)
        live.reserved -= reserved_delta(event)
        call = self.calls.get(event.call_id)
        if call is not None and event.kind in ("reservation", "release") and not event.final:
            call.reserved -= reserved_delta(event)
        self._count("undone")

    # -- internals ---------------------------------------------------------------------------
    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _live(self, account: str) -> Live:
        live = self.books.get(account)
        if live is None:
            live = self.books[account] = Live()
        return live

    def _plan(self, account: str) -> RatePlan | None:
        return self.rates.plan_for(account, self.default_plan)

    def _calls_of(self, account: str) -> list[Call]:
        live = self.books.get(account)
        return [self.calls[c] for c in (live.calls if live else ()) if c in self.calls]

    def _drop_holds(self, account: str) -> None:
        for call_id in [c for c, h in self.holds.items() if h.account == account]:
            hold = self.holds.pop(call_id)
            self._live(account).held -= hold.amount

    def _cost(self, call: Call, ms: int) -> Decimal:
        return rate_call(call.plan, call.number, call.answer_ms, ms).total

    def _schedule(self, call: Call, action: str | None, at_ms: int | None, fx: Effects) -> None:
        call.action, call.due_ms = action, at_ms
        fx.timers[call.call_id] = at_ms

    def _reserve_to(self, call: Call, paid_ms: int, now_ms: int, fx: Effects) -> None:
        """Make the call's reservation the cost of ``paid_ms`` (memory first)."""
        cost = self._cost(call, paid_ms) if paid_ms > 0 else ZERO
        delta = cost - call.reserved
        if delta == 0 and call.steps > 0:
            call.paid_ms = paid_ms
            return
        info = self.accounts.get(call.account)
        step = call.steps
        kind: Kind = "reservation" if delta >= 0 else "release"
        ev = LedgerEvent(
            id=(reservation_id if kind == "reservation" else release_id)(call.call_id, step),
            account=call.account, kind=kind, amount=abs(delta), currency=info.currency if info else "",
            ts_ms=now_ms,
            call_id=call.call_id, step=step, paid_ms=paid_ms, answer_ms=call.answer_ms,
            number=call.number, plan=call.plan.name)
        call.steps += 1
        call.reserved = cost
        call.paid_ms = paid_ms
        self._live(call.account).reserved += delta
        fx.events.append(ev)

    def _owed_at_answer(self, call: Call) -> Decimal:
        """What an answered call costs however soon it ends: connect fee + first
        increment (+ minimum time).  It is owed from the answer on, so the first
        reservation is never less -- even when ``available`` no longer covers it
        (another call's overrun since the authorization took part of the hold):
        reserving less would hand the difference to the next authorization or
        extension, and the account would pay for it twice."""
        try:
            return self._cost(call, 1)
        except RatingError:
            return ZERO

    def _affordable_ms(self, call: Call, credit: Decimal, limit_ms: int) -> int:
        """The longest call time up to ``limit_ms`` (rounded up to whole seconds)
        that ``credit`` pays for, extended to the end of the last paid increment."""
        limit_s = min(DAY, -(-limit_ms // 1000))
        try:
            seconds = max_duration(call.plan, call.number, call.answer_ms, credit, limit=limit_s)
            if seconds <= 0:
                return 0
            full = max_duration(call.plan, call.number, call.answer_ms,
                                self._cost(call, seconds * 1000))
        except RatingError:
            return 0
        return max(seconds, full) * 1000

    def _extend(self, call: Call, now_ms: int, fx: Effects) -> None:
        if call.closing or call.ended:
            return
        elapsed = max(0, now_ms - call.answer_ms)
        desired = max(call.paid_ms, elapsed) + self.reserve_ms
        credit = self.available(call.account) + call.reserved
        if call.steps == 0:
            credit = max(credit, self._owed_at_answer(call))
        paid = self._affordable_ms(call, credit, desired)
        if paid > call.paid_ms or call.steps == 0:
            self._reserve_to(call, max(paid, call.paid_ms), now_ms, fx)
        if call.paid_ms >= desired or call.paid_ms >= DAY * 1000:
            call.exhausted = False
            self._schedule(call, "extend", max(now_ms, call.paid_until_ms - self.ahead_ms), fx)
            return
        # nothing (more) to reserve: the call ends when its paid time does
        if not call.exhausted:
            call.exhausted = True
            self._notify(call.account, "credit.exhausted", now_ms, fx, call_id=call.call_id,
                         reason=EXHAUSTED)
        self._schedule(call, "teardown", max(now_ms, call.paid_until_ms - self.lead_ms), fx)

    def _send_teardown(self, call: Call, now_ms: int, fx: Effects) -> None:
        call.teardowns += 1
        fx.commands.append(commands.Teardown(
            id=_command_id("teardown", call.call_id, call.teardowns), ts_ms=now_ms,
            call_id=call.call_id, issued_by="billing", reason=call.reason, sip_cause=TEARDOWN_CAUSE))
        self._count("teardowns")
        if call.teardowns < TEARDOWN_TRIES:
            self._schedule(call, "teardown", now_ms + self.retry_ms, fx)
        else:
            self._schedule(call, None, None, fx)

    def _ended(self, call: Call, end_ms: int, now_ms: int, fx: Effects) -> None:
        call.ended, call.end_ms = True, max(end_ms, call.answer_ms)
        self._schedule(call, "expire", now_ms + self.cdr_wait_ms, fx)

    def _final_release(self, call: Call, now_ms: int, note: str) -> LedgerEvent:
        info = self.accounts.get(call.account)
        return LedgerEvent(
            id=final_release_id(call.call_id), account=call.account, kind="release",
            amount=call.reserved, currency=info.currency if info else "", ts_ms=now_ms,
            call_id=call.call_id, step=call.steps, final=True, paid_ms=call.paid_ms,
            answer_ms=call.answer_ms, number=call.number, plan=call.plan.name, note=note)

    def _expire(self, call: Call, now_ms: int, fx: Effects) -> None:
        """No CDR came for an ended call: give its reservation back (memory first)."""
        ev = self._final_release(call, now_ms, note="no CDR within cdr_wait_seconds")
        fx.events.append(ev)
        fx.problems.append(Problem(id=event_id("problem", call.call_id, "no-cdr"), ts_ms=now_ms,
                                   account=call.account, call_id=call.call_id,
                                   reason="call ended but no CDR arrived: reservation released unbilled"))
        live = self._live(call.account)
        live.reserved -= call.reserved
        live.calls.discard(call.call_id)
        del self.calls[call.call_id]
        self.finished[call.call_id] = now_ms
        fx.timers[call.call_id] = None

    def _after_money(self, account: str, before: Decimal, now_ms: int, fx: Effects) -> None:
        live = self._live(account)
        for threshold in self.thresholds:
            if live.balance < threshold and threshold not in live.low_armed:
                live.low_armed.add(threshold)
                if before >= threshold:
                    self._notify(account, "balance.low", now_ms, fx, threshold=threshold)
            elif live.balance >= threshold:
                live.low_armed.discard(threshold)
        if account not in self.accounts:
            return
        if self.available(account) < 0:
            self._rebalance(account, now_ms, fx)
        elif live.balance > before:
            self._revive(account, now_ms, fx)

    def _notify(self, account: str, kind: str, now_ms: int, fx: Effects, *,
                threshold: Decimal | None = None, call_id: str = "", reason: str = "") -> None:
        info = self.accounts.get(account)
        live = self._live(account)
        fx.notifications.append(Notification(
            type=kind, id=event_id("notification", kind, account, now_ms, threshold, call_id),
            account=account, ts_ms=now_ms, currency=info.currency if info else "",
            balance=live.balance, available=self.available(account), threshold=threshold,
            call_id=call_id, reason=reason))

    def _revive(self, account: str, now_ms: int, fx: Effects) -> None:
        """More credit: exhausted calls whose teardown has not gone out try again."""
        for call in sorted(self._calls_of(account), key=lambda c: c.answer_ms):
            if call.exhausted and call.teardowns == 0 and not call.closing and not call.ended:
                call.exhausted = False
                self._extend(call, now_ms, fx)
                if not call.exhausted:
                    self._count("revived")

    def _rebalance(self, account: str, now_ms: int, fx: Effects) -> None:
        """``available`` < 0 (an adjustment, a lower limit): shrink the newest
        calls' reservations to what they have used (+ REBALANCE_KEEP_MS) until
        it is >= 0 again, and tear those calls down now."""
        for call in sorted(self._calls_of(account), key=lambda c: c.answer_ms, reverse=True):
            available = self.available(account)
            if available >= 0:
                break
            if call.closing or call.ended:
                continue
            keep_ms = max(0, now_ms - call.answer_ms) + REBALANCE_KEEP_MS
            if call.paid_ms > keep_ms:
                try:
                    keep_cost = self._cost(call, keep_ms)
                except RatingError:
                    keep_cost = call.reserved
                target = max(keep_cost, call.reserved + available)
                paid = min(call.paid_ms, max(self._affordable_ms(call, target, call.paid_ms), keep_ms))
                if paid < call.paid_ms:
                    self._reserve_to(call, paid, now_ms, fx)
            if not call.exhausted:
                call.exhausted = True
                self._notify(account, "credit.exhausted", now_ms, fx, call_id=call.call_id,
                             reason=EXHAUSTED)
            due = call.paid_until_ms - self.lead_ms
            if due <= now_ms + REBALANCE_KEEP_MS:
                if call.teardowns == 0:
                    self._send_teardown(call, now_ms, fx)
            else:
                self._schedule(call, "teardown", due, fx)
