"""The REST API's request bodies and response models, in one module.

Why one module: they are the API's contract -- what /docs shows and what a
client may rely on -- so they are read and reviewed together, apart from the
routes that fill them.  Money is always a decimal *string* ("10.50"), in and
out: a JSON number would be a binary float.  Times are epoch milliseconds
(``*_ms``) and, for CDRs, ISO 8601 UTC as well (``*_at``).
"""
from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Literal

import msgspec
from pydantic import BaseModel, Field

from billing.money import money_text
from billing.rating.model import Rate, RatingError

Money = str         # a decimal string, e.g. "10.50" (never a JSON number)
Disposition = Literal["answered", "busy", "no_answer", "cancelled", "failed", "rejected_credit"]
EventKind = Literal["topup", "adjustment", "refund", "debit", "reservation", "release", "rerate"]


class Problem(BaseModel):
    """Every error but 422: ``{"detail": "one line"}``."""
    detail: str


# -- CDRs (api/routes/cdrs.py) ----------------------------------------------------------------

class _Timing(BaseModel):
    """What a call and each of its legs both report: times (epoch ms, and ISO 8601
    for people), durations and outcome."""
    setup_ms: int
    setup_at: str | None
    ringing_ms: int
    ringing_at: str | None
    answer_ms: int
    answer_at: str | None
    end_ms: int
    end_at: str | None
    duration_ms: int
    billable_s: int
    pdd_ms: int
    sip_code: int
    sip_reason: str
    disposition: str


class _Media(BaseModel):
    """Media of the leg (a call: of its deciding leg), from rtpengine's statistics
    (docs/events.md "CDR rows").  ``caller_*``: what the caller sent, ``callee_*``:
    what the callee sent.  0 / null / "" when the call was not relayed."""
    caller_rtp_packets: int = 0
    caller_rtp_bytes: int = 0
    caller_rtp_errors: int = 0
    caller_rtp_lost: int | None = Field(None, description="RTCP; null = unknown")
    caller_rtp_jitter_ms: int | None = Field(None, description="RTCP interarrival jitter; null = unknown")
    caller_rtp_mos_x10: int | None = Field(None, description="MOS x 10 (43 = 4.3); null = unknown")
    callee_rtp_packets: int = 0
    callee_rtp_bytes: int = 0
    callee_rtp_errors: int = 0
    callee_rtp_lost: int | None = None
    callee_rtp_jitter_ms: int | None = None
    callee_rtp_mos_x10: int | None = None
    media_relay: str = Field("", description="the rtpengine instance; \"\" = not relayed")
    last_media_ms: int = Field(0, description="the last RTP packet of either party; 0 = none / unknown")


class _CallFields(_Timing, _Media):
    """What a call and each of its legs both carry: the call's identity and parties,
    and the leg's (or the answering leg's) destination."""
    cdr_id: str
    legs: int
    call_id: str
    from_tag: str
    to_tag: str
    account: str
    caller_uri: str
    caller_number: str
    caller_ip: str
    caller_user_agent: str
    dialled: str
    dialled_number: str
    callee_uri: str
    domain: str
    proxy: str
    hangup_by: str
    hangup_reason: str
    gateway: str
    target: str
    destination: str
    callee_user_agent: str


class Call(_CallFields):
    gateways: list[str]


class Leg(_CallFields):
    leg: int
    parent_leg: int
    leg_cause: str
    v: int
    call_sip_code: int
    call_sip_reason: str
    call_disposition: str


class CallDetail(Call):
    legs_detail: list[Leg]
    trace_url: str | None = None      # its captured SIP messages, when there are some (docs/trace.md)


class TraceMessage(BaseModel):
    id: str
    ts_ms: int
    direction: Literal["in", "out"]
    transport: str
    src: str                          # ip:port
    dst: str
    method: str                       # "" for a reply
    status: int                       # 0 for a request
    cseq: str
    raw: str


class CallTrace(BaseModel):
    """A call's captured SIP messages (api/routes/trace.py, docs/trace.md)."""
    call_id: str
    messages: list[TraceMessage]
    ladder: list[str]


class CallPage(BaseModel):
    items: list[Call]
    next_cursor: str | None
    limit: int


class RebuildRequest(BaseModel):
    """``POST /v1/cdrs/rebuild``: the calls whose first event is in [from, to) (epoch ms)."""
    from_: int = Field(alias="from", ge=0, le=2**32 * 1000, description="start, epoch ms")
    to: int = Field(ge=0, le=2**32 * 1000, description="end, exclusive, epoch ms")
    dry_run: bool = Field(False, description="report the differences, write nothing")


class RebuildDiff(BaseModel):
    cdr_id: str
    call_id: str
    change: Literal["added", "changed", "removed"]
    legs: dict[str, dict[str, list]] = Field(description="changed: leg -> field -> [stored, rebuilt]")


class RebuildReport(BaseModel):
    """What a rebuild found and wrote (docs/operations.md); ``diffs``: at most 1000."""
    from_ms: int
    to_ms: int
    dry_run: bool
    calls: int
    live: int
    unchanged: int
    added: int
    changed: int
    removed: int
    legs_written: int
    events: int
    unreadable: int
    seconds: float
    diffs: list[RebuildDiff]


# -- statistics (api/routes/stats.py) ------------------------------------------------------------

class Pdd(BaseModel):
    count: int
    mean: float | None
    p50: int | None
    p95: int | None


class StatsRow(BaseModel):
    period: str
    period_start_ms: int
    group: str
    attempts: int
    answered: int
    effective: int
    asr: float | None
    ner: float | None
    seer: float | None
    acd_s: float | None
    pdd_ms: Pdd


class StatsResponse(BaseModel):
    period: str
    group_by: str
    unit: Literal["call", "leg"]
    rows: list[StatsRow]


class QualityRow(StatsRow):
    probe: str | None = None        # group_by=gateway: up, down, not_probed, unknown


class QualityResponse(BaseModel):
    bucket: str
    group_by: str
    unit: Literal["call", "leg"]
    prefix_len: int | None
    rows: list[QualityRow]
    gateways: dict[str, str]


# -- fraud alerts (api/routes/fraud.py) ----------------------------------------------------------

class FraudAlertRow(BaseModel):
    id: int
    at: float
    severity: str
    parameter: str
    value: int
    threshold: int
    user: str
    number: str
    prefix: str
    profile: str
    rule_id: int
    call_id: str
    action: str


class FraudAlertPage(BaseModel):
    items: list[FraudAlertRow]


# -- metrics (api/routes/metrics.py) -------------------------------------------------------------

class MetricRow(BaseModel):
    name: str = Field(description="group:name{labels}, as `sipledger stats` prints it")
    value: float


class MetricsResponse(BaseModel):
    group: str | None
    rows: list[MetricRow]


# -- accounts and money (api/routes/accounts.py) -------------------------------------------------

class AccountIn(BaseModel):
    id: str = Field(max_length=255, description="user@domain, as the proxy authenticates it")
    kind: Literal["prepaid", "postpaid"] = "prepaid"
    currency: str | None = Field(None, description="ISO 4217; default the [billing] currency")
    credit_limit: Money | None = Field(None, description="postpaid: decimal string, how far below 0")
    status: Literal["active", "blocked"] = "active"
    name: str = ""


class AccountPatch(BaseModel):
    kind: Literal["prepaid", "postpaid"] | None = None
    credit_limit: Money | None = None
    status: Literal["active", "blocked"] | None = None
    name: str | None = None


class Account(BaseModel):
    id: str
    kind: str
    currency: str
    status: str
    credit_limit: Money
    name: str
    created_ms: int
    updated_ms: int


class AccountWithPlan(Account):
    plan: str | None = Field(description="the assigned rate plan (null: the default plan, if any)")


class AccountList(BaseModel):
    items: list[AccountWithPlan]


class ActiveCall(BaseModel):
    call_id: str
    answer_ms: int
    paid_ms: int
    reserved: Money
    exhausted: bool
    number: str


class Balance(BaseModel):
    account: str
    currency: str
    kind: str
    status: str
    credit_limit: Money
    balance: Money
    reserved: Money = Field(description="held for live calls' next steps")
    held: Money
    available: Money = Field(description="balance + credit limit (postpaid) - reserved - held")
    active_calls: list[ActiveCall]
    live: bool = Field(description="false: folded from the ledger (no billing service running)")
    at_ms: int | None = Field(None, description="?at=T: the instant (epoch ms) the balance, reservations and "
                                                "events were folded up to; null = now")
    events: list[LedgerEvent] = Field(default_factory=list, description="?at=T: the last 50 events booked "
                                                                         "until T, newest first")


class TopupIn(BaseModel):
    amount: Money = Field(description="decimal string > 0, at most 6 decimals, e.g. \"10.50\"")
    note: str = Field("", max_length=500)


class AdjustmentIn(BaseModel):
    amount: Money = Field(description="signed decimal string (adjustment) or > 0 (refund)")
    kind: Literal["adjustment", "refund"] = "adjustment"
    note: str = Field("", max_length=500)
    cdr_id: str = ""
    leg: int = -1


class _EventFields(BaseModel):
    id: str
    seq: int
    account: str
    kind: EventKind
    amount: Money
    balance_delta: Money
    currency: str
    ts_ms: int
    call_id: str
    cdr_id: str
    leg: int
    key: str = Field(description="idempotency key (top-up, adjustment, refund)")
    step: int
    final: bool
    paid_ms: int
    answer_ms: int
    number: str
    plan: str
    prefix: str
    rate_name: str
    gateway: str
    duration_ms: int
    billed_s: int
    note: str


class LedgerEvent(_EventFields):
    """The event a money request wrote (or found: ``replayed``)."""
    v: int


class MoneyResult(Balance):
    event: LedgerEvent
    replayed: bool = Field(description="true: this Idempotency-Key was used before; nothing new was written")


# -- ledger (api/routes/ledger.py) -------------------------------------------------------------

class LedgerEntry(_EventFields):
    reserved_delta: Money


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next_cursor: str | None
    limit: int


class CheckPeriod(BaseModel):
    account: str
    period: str = Field(description="YYYY-MM (UTC, answer time)")
    currency: str
    cdr_legs: int
    rated: Money
    debits: int
    debited: Money
    difference: Money


class CheckDifference(BaseModel):
    kind: str
    account: str
    cdr_id: str
    leg: int
    period: str
    rated: Money
    debited: Money
    detail: str


class CheckResult(BaseModel):
    from_ms: int | None
    to_ms: int | None
    ok: bool
    periods: list[CheckPeriod]
    differences: list[CheckDifference]
    skipped: list[CheckDifference] = Field(
        default_factory=list, description="not billable, not an error: e.g. kind before_account, "
                                          "a call answered before its account existed")


# -- rates (api/routes/rates.py) ---------------------------------------------------------------

class PlanIn(BaseModel):
    name: str
    timezone: str = "UTC"


class Plan(BaseModel):
    name: str
    timezone: str


class PlanSummary(Plan):
    currency: str | None
    rates: int
    accounts: int


class PlanList(BaseModel):
    items: list[PlanSummary]


class PlanAssign(BaseModel):
    plan: str


class PlanAssignment(BaseModel):
    account: str
    plan: str


class RateIn(BaseModel):
    prefix: str = ""
    price_per_min: Money
    currency: str
    name: str = ""
    connect_fee: Money = "0"
    first_increment: int = 60
    next_increment: int = 60
    min_seconds: int = 0
    rounding: Literal["up", "down", "half_up", "half_even"] = "half_up"
    decimals: int = 4
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    weekdays: list[int] = []
    time_from: int = 0
    time_to: int = 86400

    def to_rate(self) -> Rate:
        """The billing ``Rate`` (RatingError, a 422, when the rating rules refuse it)."""
        values = self.model_dump()
        for money in ("price_per_min", "connect_fee"):
            text = values[money].strip()
            if not re.fullmatch(r"\d+(\.\d+)?", text):
                raise RatingError(f"{money} {text!r} must be a plain decimal string like 0.0125")
            values[money] = Decimal(text)
        values["weekdays"] = frozenset(values["weekdays"])
        return Rate(**values)


class RateOut(BaseModel):
    id: int
    plan: str
    prefix: str
    price_per_min: Money
    currency: str
    name: str
    connect_fee: Money
    first_increment: int
    next_increment: int
    min_seconds: int
    rounding: str
    decimals: int
    valid_from: datetime | None
    valid_to: datetime | None
    weekdays: list[int] = Field(description="0 = Monday .. 6 = Sunday; empty = every day")
    time_from: int
    time_to: int

    @classmethod
    def of(cls, rate_id: int, plan: str, rate: Rate) -> RateOut:
        data = msgspec.to_builtins(rate, builtin_types=(Decimal, datetime))
        data.update(price_per_min=money_text(rate.price_per_min), connect_fee=money_text(rate.connect_fee),
                    weekdays=sorted(rate.weekdays))
        return cls(id=rate_id, plan=plan, **data)


class RateList(BaseModel):
    items: list[RateOut]


class AccountRates(RateList):
    plan: str | None


class ImportResult(BaseModel):
    added: int
    created: list[str]


class ImportProblem(Problem):
    errors: list[str]


# -- live calls (api/routes/calls.py) ---------------------------------------------------------

class LiveCall(BaseModel):
    """One call in progress, as its proxy worker published it (at most ~1 s ago)."""
    call_id: str
    state: Literal["early", "confirmed", "ending"] = Field(
        description="early: ringing (not answered); confirmed: answered; "
                    "ending: the proxy sent BYE both ways (or CANCEL while it rang)")
    caller: str = Field(description="the INVITE's From URI")
    callee: str = Field(description="the INVITE's To URI")
    account: str = Field(description="the authenticated caller (user@domain); '' if none")
    gateway: str = Field(description="the gateway of the answering (early: latest) branch; '' if none")
    started_ms: int = Field(description="the INVITE, epoch ms")
    answered_ms: int = Field(description="the answer, epoch ms; 0 = not answered")
    duration_ms: int = Field(description="since the answer, now; 0 = not answered")
    max_duration_s: int = Field(description="the proxy sends BYE both ways at this duration")
    worker: int = Field(description="the proxy worker that holds it")
    instance: str = Field("", description="the proxy instance (host:port) that holds it, with several "
                                          "instances sharing a provisioning database; '' on one host")


class LiveCallPage(BaseModel):
    items: list[LiveCall]
    workers: int = Field(description="running proxy workers that published their calls")
    truncated: bool = Field(description="a worker had more calls than it lists (5000 each)")


class HangupAccepted(BaseModel):
    """The teardown was handed to the proxy workers (call.control); the call
    leaves the list within ~1 s and its CDR ends with disposition of a teardown."""
    call: LiveCall
    command_id: str
    reason: str


# -- rerate (api/routes/rerate.py) ---------------------------------------------------------------

class RerateIn(BaseModel):
    from_: str = Field(alias="from", max_length=40, description="answer time from (ISO 8601, YYYY-MM or epoch ms)")
    to: str = Field(max_length=40, description="answer time to, exclusive (a day or month means its end)")
    account: str = Field("", max_length=255, description="only this account")
    plan: str = Field("", max_length=64, description="price with this plan instead of each account's own")
    dry_run: bool = Field(False, description="answer what would change; book nothing, record no run")


class RerateAccount(BaseModel):
    account: str
    currency: str
    calls: int
    changed: int
    unrated: int = Field(description="calls no rate applies to now: they keep their cost")
    before: Money
    after: Money
    delta: Money = Field(description="after - before: what the account was charged more (< 0: less)")


class RerateChange(BaseModel):
    account: str
    cdr_id: str
    leg: int
    call_id: str
    number: str
    answer_ms: int
    duration_ms: int
    before: Money
    after: Money
    event_id: str = Field(description="the rerate ledger event (its correction)")


class RerateRun(BaseModel):
    id: str
    who: str
    created_ms: int
    from_ms: int
    to_ms: int
    account: str
    plan: str
    dry_run: bool
    calls: int
    changed: int
    unrated: int
    total_before: Money
    total_after: Money
    delta: Money
    accounts: list[RerateAccount]
    changes: list[RerateChange] = Field(default_factory=list, description="POST only: the first 200 changes")


class RerateRunList(BaseModel):
    items: list[RerateRun]


# -- panel sessions (api/routes/session.py) -----------------------------------------------------

class SessionIn(BaseModel):
    """Either an API token, or an account's SIP credentials (``user`` = user@domain)."""
    token: str = Field("", max_length=128, description="an API token (`sipledger token create`)")
    user: str = Field("", max_length=255, description="user@domain of a subscriber")
    password: str = Field("", max_length=128, description="the subscriber's SIP password")


class SessionOut(BaseModel):
    token: str = Field(description="the session token (Bearer), shown once")
    role: Literal["admin", "account"]
    account: str = Field(description="the account an account session reads; '' for admin")
    expires_ms: int


class WhoAmI(BaseModel):
    role: Literal["admin", "account"]
    account: str
    name: str
    expires_ms: int | None = Field(description="a session's end; null for an API token")
