"""Fraud detection with OpenSIPS fraud_detection semantics (sans-I/O).

A *profile* is a list of *rules*; a rule has a dialled-number prefix, an
interval of hours and a set of weekdays (all UTC), and a warning and a
critical threshold for five figures, counted per (user, rule prefix):

* ``cpm`` — calls per minute, a gliding 60 s window;
* ``total_calls`` — calls since the rule's interval began today (a new
  interval starts the count again, as OpenSIPS does);
* ``concurrent_calls`` — calls set up and not ended yet;
* ``sequential_calls`` — consecutive calls of the user to the same prefix
  (a call to another prefix starts again);
* ``call_duration`` — seconds of one answered call, judged when it ends.

``check()`` is OpenSIPS's ``check_fraud(user, number, profile)``: it counts a
new call against the longest-prefix rule active now and returns the alerts
it raised.  ``ended()`` releases a call (concurrency) and judges its
duration.  No sockets, no clock reads: the caller passes ``now`` (epoch
seconds from proxy.infra.clock) and turns alerts into events.

Every worker holds its own checker and counts the calls it sees.  The kernel
spreads datagrams over the workers, so ``cpm`` and ``total_calls`` — rates,
spread evenly — are estimated as the local count times ``workers``;
``concurrent_calls`` and ``sequential_calls`` use the local count, a lower
bound that never raises a false alert (docs/fraud.md).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

Severity = Literal["warning", "critical"]
PARAMETERS = ("cpm", "total_calls", "concurrent_calls", "sequential_calls", "call_duration")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_TRACKED_USERS = 100_000      # (user, prefix) pairs kept; the least recently seen go first
MAX_OPEN_CALLS = 200_000
WINDOW_S = 60.0


class FraudRuleError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FraudRule:
    """One row of the fraud rules table.  A threshold of 0 is not checked."""
    rule_id: int
    profile: str
    prefix: str = ""
    start_hour: str = "00:00"
    end_hour: str = "23:59"
    days: str = "mon-sun"
    cpm_warning: int = 0
    cpm_critical: int = 0
    total_calls_warning: int = 0
    total_calls_critical: int = 0
    concurrent_calls_warning: int = 0
    concurrent_calls_critical: int = 0
    sequential_calls_warning: int = 0
    sequential_calls_critical: int = 0
    call_duration_warning: int = 0
    call_duration_critical: int = 0

    def thresholds(self, parameter: str) -> tuple[int, int]:
        return getattr(self, f"{parameter}_warning"), getattr(self, f"{parameter}_critical")


def parse_hour(text: str) -> int:
    """'HH:MM' → minutes of the day."""
    try:
        hh, mm = text.split(":")
        hours, minutes = int(hh), int(mm)
    except ValueError:
        raise FraudRuleError(f"hour {text!r}: must be HH:MM") from None
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise FraudRuleError(f"hour {text!r}: must be between 00:00 and 23:59")
    return hours * 60 + minutes


def parse_days(text: str) -> frozenset[int]:
    """'mon-fri,sun' (or '*') → weekday numbers (Monday = 0)."""
    text = text.strip().lower()
    if text in ("*", ""):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            a = WEEKDAYS.index(first[:3])
            b = WEEKDAYS.index(last[:3]) if last else a
        except ValueError:
            raise FraudRuleError(f"days {text!r}: use mon..sun, ranges (mon-fri) and commas") from None
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def validate(rule: FraudRule) -> FraudRule:
    if rule.prefix and not rule.prefix.lstrip("+").isdigit():
        raise FraudRuleError(f"prefix {rule.prefix!r}: digits only")
    parse_hour(rule.start_hour)
    parse_hour(rule.end_hour)
    parse_days(rule.days)
    for parameter in PARAMETERS:
        warning, critical = rule.thresholds(parameter)
        if warning < 0 or critical < 0:
            raise FraudRuleError(f"{parameter}: thresholds must be >= 0")
        if warning and critical and warning > critical:
            raise FraudRuleError(f"{parameter}: warning {warning} is above critical {critical}")
    return rule


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: FraudRule
    prefix: str
    start: int            # minutes of the day
    end: int
    days: frozenset[int]

    def interval_start(self, moment: datetime) -> int | None:
        """Epoch minute where the active interval began, or None when the rule
        is not active at ``moment``.  An interval may cross midnight (22:00-06:00)."""
        minute = moment.hour * 60 + moment.minute
        day_start = int(moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()) // 60
        weekday = moment.weekday()
        if self.start <= self.end:
            if weekday in self.days and self.start <= minute <= self.end:
                return day_start + self.start
            return None
        if minute >= self.start and weekday in self.days:
            return day_start + self.start
        if minute <= self.end and (weekday - 1) % 7 in self.days:
            return day_start - 1440 + self.start
        return None


@dataclass(frozen=True, slots=True)
class FraudAlert:
    severity: Severity
    parameter: str
    value: int
    threshold: int
    user: str
    number: str
    prefix: str
    profile: str
    rule_id: int
    call_id: str


@dataclass
class _Stats:
    calls: deque = field(default_factory=deque)   # times of the last minute's calls
    interval: int | None = None
    total: int = 0
    concurrent: int = 0


@dataclass
class _OpenCall:
    key: tuple[str, str]
    rule: FraudRule
    number: str
    answered_at: float | None = None


class FraudChecker:
    """Per-worker counters over the rules of every profile."""

    def __init__(self, rules: tuple[FraudRule, ...] = (), workers: int = 1):
        self.workers = max(1, workers)
        self._profiles: dict[str, list[_Compiled]] = {}
        self._stats: dict[tuple[str, str], _Stats] = {}
        self._last_prefix: dict[str, tuple[str, int]] = {}   # user -> (prefix, run length)
        self._open: dict[str, _OpenCall] = {}
        self.load(rules)

    def load(self, rules: tuple[FraudRule, ...]) -> None:
        """New rules (a provisioning reload); counters are kept."""
        profiles: dict[str, list[_Compiled]] = {}
        for rule in rules:
            profiles.setdefault(rule.profile, []).append(_Compiled(
                rule, rule.prefix.lstrip("+"), parse_hour(rule.start_hour), parse_hour(rule.end_hour),
                parse_days(rule.days)))
        for compiled in profiles.values():
            compiled.sort(key=lambda c: -len(c.prefix))       # longest prefix first
        self._profiles = profiles

    def has_profile(self, profile: str) -> bool:
        return profile in self._profiles

    def match(self, profile: str, number: str, now: float) -> tuple[_Compiled, int] | None:
        moment = datetime.fromtimestamp(now, tz=timezone.utc)
        digits = number.lstrip("+")
        for compiled in self._profiles.get(profile, ()):
            if digits.startswith(compiled.prefix):
                start = compiled.interval_start(moment)
                if start is not None:
                    return compiled, start
        return None

    def check(self, user: str, number: str, profile: str, call_id: str, now: float) -> list[FraudAlert]:
        """Count a new call of ``user`` to ``number``; the alerts it raised."""
        found = self.match(profile, number, now)
        if found is None:
            return []
        compiled, interval = found
        rule, key = compiled.rule, (user, compiled.prefix)
        stats = self._stats.pop(key, None) or _Stats()
        self._stats[key] = stats                          # most recently seen last
        while len(self._stats) > MAX_TRACKED_USERS:
            self._stats.pop(next(iter(self._stats)))
        while stats.calls and stats.calls[0] <= now - WINDOW_S:
            stats.calls.popleft()
        stats.calls.append(now)
        if stats.interval != interval:
            stats.interval, stats.total = interval, 0
        stats.total += 1
        if call_id not in self._open and len(self._open) < MAX_OPEN_CALLS:
            stats.concurrent += 1
            self._open[call_id] = _OpenCall(key, rule, number)
        last, run = self._last_prefix.get(user, ("", 0))
        run = run + 1 if last == compiled.prefix else 1
        self._last_prefix[user] = (compiled.prefix, run)
        if len(self._last_prefix) > MAX_TRACKED_USERS:
            self._last_prefix.pop(next(iter(self._last_prefix)))
        values = {"cpm": len(stats.calls) * self.workers, "total_calls": stats.total * self.workers,
                  "concurrent_calls": stats.concurrent, "sequential_calls": run}
        alert = _AlertMaker(user, number, compiled.prefix, rule, call_id)
        return [a for parameter, value in values.items() if (a := alert(parameter, value)) is not None]

    def is_open(self, call_id: str) -> bool:
        return call_id in self._open

    def duration_limit(self, call_id: str) -> int:
        """The critical call_duration of the rule an open call matched (0: none)."""
        call = self._open.get(call_id)
        return call.rule.call_duration_critical if call is not None else 0

    def answered(self, call_id: str, now: float) -> None:
        call = self._open.get(call_id)
        if call is not None and call.answered_at is None:
            call.answered_at = now

    def ended(self, call_id: str, now: float) -> list[FraudAlert]:
        """The call is over: release it; an answered call's duration is judged."""
        call = self._open.pop(call_id, None)
        if call is None:
            return []
        stats = self._stats.get(call.key)
        if stats is not None and stats.concurrent > 0:
            stats.concurrent -= 1
        if call.answered_at is None:
            return []
        alert = _AlertMaker(call.key[0], call.number, call.key[1], call.rule, call_id)
        found = alert("call_duration", int(now - call.answered_at))
        return [found] if found is not None else []

    def stats(self) -> list[dict]:
        """Counters per (user, prefix), for diagnostics."""
        return [{"user": user, "prefix": prefix, "cpm": len(s.calls), "total_calls": s.total,
                 "concurrent_calls": s.concurrent} for (user, prefix), s in self._stats.items()]


@dataclass(frozen=True, slots=True)
class _AlertMaker:
    user: str
    number: str
    prefix: str
    rule: FraudRule
    call_id: str

    def __call__(self, parameter: str, value: int) -> FraudAlert | None:
        warning, critical = self.rule.thresholds(parameter)
        if critical and value >= critical:
            severity: Severity = "critical"
            threshold = critical
        elif warning and value >= warning:
            severity, threshold = "warning", warning
        else:
            return None
        return FraudAlert(severity, parameter, value, threshold, self.user, self.number, self.prefix,
                          self.rule.profile, self.rule.rule_id, self.call_id)
