"""One worker's metrics: its plain counters copied into prometheus-client once a second.

The hot path never calls prometheus-client: the core bumps integers
(proxy/core/stats.py), the flood guard, publisher, resolver and lockout keep
their own, and ``WorkerMetrics.tick`` adds what grew since the last tick to the
shared families (proxy/infra/metrics.py) and sets the gauges from the tables.
The slower edges (ng requests, authorizations: one or two per call) observe
their latency histograms directly through ``observe_media`` / ``observe_authorization``.
"""
from __future__ import annotations

import time
from typing import Any

from ..core.stats import CLASSES, CoreStats
from ..infra import clock, metrics

# the teardown reasons Kamailio would count as expired dialogs (a timer ended them)
EXPIRY_REASONS = frozenset({"max_duration", "session_expired", "media_timeout"})


class CounterCopy:
    """Adds to prometheus counters what plain integers grew by since the last copy."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, tuple[str, ...]], float] = {}

    def copy(self, family: Any, name: str, labels: tuple[str, ...], value: float) -> None:
        key = (name, labels)
        delta = value - self.last.get(key, 0)
        if delta > 0:
            (family.labels(*labels) if labels else family).inc(delta)
            self.last[key] = value


class WorkerMetrics:
    def __init__(self, core: Any, worker: Any, is_first: bool):
        self.core = core
        self.worker = worker                 # the runtime Worker (guard, publisher, effects ...)
        self.is_first = is_first             # worker 0 reports the shared location table
        self.families = metrics.families()
        self.copier = CounterCopy()
        self.empty_since = time.monotonic()  # the outbox was last seen empty then
        self.expired_contacts = 0

    def counters(self) -> dict[tuple[str, tuple[str, ...]], float]:
        """Every monotonic figure of this worker, keyed by (family, labels)."""
        s: CoreStats = self.core.stats
        out: dict[tuple[str, tuple[str, ...]], float] = {}
        for method, n in s.rcv_requests.items():
            out["core_rcv_requests", (method,)] = n
        for method, n in s.fwd_requests.items():
            out["core_fwd_requests", (method,)] = n
        for i, cls in enumerate(CLASSES, start=1):
            out["core_rcv_replies", (cls,)] = s.rcv_replies[i]
            out["core_fwd_replies", (cls,)] = s.fwd_replies[i]
            out["tm_replies", (cls,)] = s.tm_replies[i]
        for code, n in s.sl_replies.items():
            out["sl_replies", (str(code),)] = n
        guard = self.worker.guard
        if guard.refused:       # the flood guard's 503s are stateless replies too (Kamailio counts them there)
            key = ("sl_replies", ("503",))
            out[key] = out.get(key, 0) + guard.refused
        for reason, n in s.teardowns.items():
            out["dialog_teardowns", (reason,)] = n
        out["dialog_expired", ()] = sum(n for r, n in s.teardowns.items() if r in EXPIRY_REASONS)
        for name in ("drop_replies", "bad_msg"):
            out["core_" + name, ()] = getattr(s, name)
        out["tm_created", ()] = s.tm_created
        out["dialog_processed", ()] = s.dialogs_processed
        out["dialog_failed", ()] = s.dialogs_failed
        out["auth_challenges", ()] = s.auth_challenges
        out["auth_failures", ()] = s.auth_failures
        out["auth_successes", ()] = s.auth_successes
        out["dns_queries", ()] = self.core.resolver.queries
        out["usrloc_expired_contacts", ()] = self.expired_contacts
        if guard.pike is not None:
            pike = guard.pike.counters()
            out["pike_requests", ()] = pike["requests"]
            out["pike_dropped", ()] = pike["dropped"]
            out["pike_blocks", ()] = pike["blocks"]
        if guard.shedder is not None:
            shed = guard.shedder.counters()
            out["shedder_shed", ()] = shed["shed"]
            out["shedder_episodes", ()] = shed["episodes"]
        publisher = self.worker.publisher
        out["events_published", ()] = publisher.published
        out["events_publish_errors", ()] = publisher.failed_attempts
        authorization = self.worker.authorization
        if authorization is not None:
            out["credit_authorize_timeouts", ()] = authorization.timeouts
        return out

    def tick(self, now: float) -> None:
        """Copy the counters, set the gauges (the worker calls it once a second)."""
        f, core = self.families, self.core
        for (name, labels), value in self.counters().items():
            self.copier.copy(f[name], name, labels, value)
        f["tm_transactions"].set(len(core.server_txs) + len(core.client_txs))
        f["dialog_active"].set(len(core.dialogs))
        f["dialog_early"].set(len(core.calls))
        depth = self.worker.outbox.count()
        monotonic = time.monotonic()
        if depth == 0:
            self.empty_since = monotonic
        f["events_outbox_depth"].set(depth)
        f["events_outbox_age_seconds"].set(monotonic - self.empty_since)
        shedder = self.worker.guard.shedder
        f["shedder_shedding"].set(int(shedder.shedding) if shedder is not None else 0)
        if core.authenticator is not None:
            f["lockout_locks"].set(lockouts_held(core.authenticator.lockout))
        if self.is_first and core.location is not None:
            users, contacts = core.location.totals(clock.time())     # bindings expire on the project clock
            f["usrloc_registered_users"].set(users)
            f["usrloc_registered_contacts"].set(contacts)


def lockouts_held(lockout) -> int:
    """Locks in force now: lockout expiries are on the host clock, as the nonce
    times beside them (proxy/script/context.py ``authenticate``)."""
    return lockout.locks_held(time.time())


def observe_media(command: str, seconds: float | None) -> None:
    """One ng request: its round trip, or None when it failed."""
    if not metrics.enabled():
        return
    f = metrics.families()
    f["media_ng_requests"].labels(command).inc()
    if seconds is None:
        f["media_ng_failures"].labels(command).inc()
    else:
        f["media_ng_seconds"].labels(command).observe(seconds)


def observe_authorization(seconds: float) -> None:
    if metrics.enabled():
        metrics.families()["credit_authorize_seconds"].observe(seconds)
