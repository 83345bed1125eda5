"""Gateway health by OPTIONS probing (drouting's probing), as a sans-I/O state machine.

The runtime asks ``due(now)`` which gateways to send an OPTIONS to, and
reports each probe's outcome with ``on_reply(name, status, now)`` or
``on_timeout(name, now)``; the call flow may report a failed call with
``mark_down(name, now)`` (dr_disable).  The routing script asks ``is_up(name)``
(pass ``prober.is_up`` to ``select``).

Any final response means the gateway is alive, 4xx included (a gateway that
answers is up, as in OpenSIPS) — except the ``failure_codes`` (408 and 503 by
default), which count as failures like a timeout.  A probe not reported after
``probe_timeout`` seconds counts as timed out.

Probe modes (per gateway): ``never`` — not tracked, always up; ``always`` —
probed every ``interval``; ``when-down`` — probed only while down (taken down
by ``mark_down`` or a failed probe), until it is back up.

The transitions are one table (``TRANSITIONS``): for a (state, outcome) pair,
the state it leads to and the threshold of consecutive outcomes needed
(None: at once).  A change of state is returned and queued as a
``StateChange`` record for the runtime to log or expose (``pop_changes()``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .drouting import Gateway, ProbeMode

__all__ = ["Health", "Outcome", "TRANSITIONS", "StateChange", "GatewayStatus", "GatewayProber",
           "DEFAULT_FAILURE_CODES"]

DEFAULT_FAILURE_CODES = frozenset({408, 503})


class Health(str, Enum):
    UP = "up"
    DOWN = "down"

    def __str__(self) -> str:
        return self.value


class Outcome(str, Enum):
    ANSWERED = "answered"        # a final response not in failure_codes
    FAILED = "failed"            # a failure code, or no answer in time
    DISABLED = "disabled"        # the call flow gave up on it (dr_disable)

    def __str__(self) -> str:
        return self.value


# (state, outcome) -> (state it counts toward, threshold setting); (None, None):
# stay and forget the streak; a threshold of None: switch at once
TRANSITIONS: dict[tuple[Health, Outcome], tuple[Health | None, str | None]] = {
    (Health.UP, Outcome.ANSWERED): (None, None),
    (Health.UP, Outcome.FAILED): (Health.DOWN, "failures_to_down"),
    (Health.UP, Outcome.DISABLED): (Health.DOWN, None),
    (Health.DOWN, Outcome.ANSWERED): (Health.UP, "successes_to_up"),
    (Health.DOWN, Outcome.FAILED): (None, None),
    (Health.DOWN, Outcome.DISABLED): (None, None),
}

# which states each mode probes in
PROBED_IN: dict[ProbeMode, frozenset[Health]] = {
    ProbeMode.NEVER: frozenset(),
    ProbeMode.ALWAYS: frozenset({Health.UP, Health.DOWN}),
    ProbeMode.WHEN_DOWN: frozenset({Health.DOWN}),
}


@dataclass(frozen=True, slots=True)
class StateChange:
    gateway: str
    old: Health
    new: Health
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """What ``status()`` exposes for one tracked gateway."""
    gateway: str
    state: Health
    streak: int                  # consecutive outcomes counting toward the other state
    probing: bool                # a probe is outstanding
    last_status: int | None      # status of the last probe reply (None: timeout / none yet)
    last_probe_at: float | None
    changed_at: float | None


class _Tracked:
    __slots__ = ("gateway", "state", "streak", "pending_since", "next_probe", "last_status",
                 "last_probe_at", "changed_at")

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.state = Health.UP               # a gateway starts usable, as in OpenSIPS
        self.streak = 0
        self.pending_since: float | None = None
        self.next_probe = float("-inf")
        self.last_status: int | None = None
        self.last_probe_at: float | None = None
        self.changed_at: float | None = None


class GatewayProber:
    def __init__(self, gateways: Iterable[Gateway] = (), interval: float = 30.0,
                 failures_to_down: int = 2, successes_to_up: int = 1, *,
                 failure_codes: Iterable[int] = DEFAULT_FAILURE_CODES, probe_timeout: float = 32.0):
        if interval <= 0 or probe_timeout <= 0:
            raise ValueError("interval and probe_timeout must be positive")
        if failures_to_down < 1 or successes_to_up < 1:
            raise ValueError("failures_to_down and successes_to_up must be at least 1")
        self.interval = interval
        self.failures_to_down = failures_to_down
        self.successes_to_up = successes_to_up
        self.failure_codes = frozenset(failure_codes)
        self.probe_timeout = probe_timeout
        self._tracked: dict[str, _Tracked] = {}
        self._changes: list[StateChange] = []
        self.set_gateways(gateways)

    # -- configuration -----------------------------------------------------------------------
    def set_gateways(self, gateways: Iterable[Gateway], now: float | None = None) -> None:
        """Follow a routing reload: new gateways start up; a gateway whose
        address, transport or mode changed starts afresh; one no longer probed
        (removed, or now ``never``) is forgotten, i.e. up again."""
        fresh: dict[str, _Tracked] = {}
        for gateway in gateways:
            if gateway.probe is ProbeMode.NEVER:
                continue
            old = self._tracked.get(gateway.name)
            if old is not None and _same_target(old.gateway, gateway):
                old.gateway = gateway
                fresh[gateway.name] = old
            else:
                fresh[gateway.name] = _Tracked(gateway)
        for name, old in self._tracked.items():
            if old.state is Health.DOWN and (name not in fresh or fresh[name] is not old):
                self._record(name, Health.DOWN, Health.UP, "no longer probed as before", now)
        self._tracked = fresh

    # -- the runtime's side ---------------------------------------------------------------------
    def due(self, now: float) -> list[Gateway]:
        """Gateways to send an OPTIONS to now (each then has a probe outstanding).
        Probes outstanding for longer than ``probe_timeout`` count as timed out first."""
        out = []
        for name, t in self._tracked.items():
            if t.pending_since is not None and now - t.pending_since >= self.probe_timeout:
                self._settle(name, t, None, now)
            if t.pending_since is None and t.state in PROBED_IN[t.gateway.probe] and now >= t.next_probe:
                t.pending_since = now
                t.last_probe_at = now
                t.next_probe = now + self.interval
                out.append(t.gateway)
        return out

    def on_reply(self, name: str, status: int, now: float) -> StateChange | None:
        """A response to the outstanding probe of ``name`` (provisional ones and
        replies to no outstanding probe are ignored)."""
        t = self._tracked.get(name)
        if t is None or t.pending_since is None or status < 200:
            return None
        return self._settle(name, t, status, now)

    def on_timeout(self, name: str, now: float) -> StateChange | None:
        """The outstanding probe of ``name`` got no final response."""
        t = self._tracked.get(name)
        if t is None or t.pending_since is None:
            return None
        return self._settle(name, t, None, now)

    def mark_down(self, name: str, now: float, reason: str = "calls failing") -> StateChange | None:
        """dr_disable: take a probed gateway down now (it comes back up through
        its probes); gateways that are never probed are not tracked and stay up."""
        t = self._tracked.get(name)
        if t is None:
            return None
        change = self._step(name, t, Outcome.DISABLED, now, f"marked down: {reason}")
        if t.pending_since is None and t.next_probe < now + self.interval:
            t.next_probe = now + self.interval      # give it a moment before probing it back
        return change

    # -- the routing script's side ------------------------------------------------------------------
    def is_up(self, name: str) -> bool:
        t = self._tracked.get(name)
        return t is None or t.state is Health.UP

    def status(self) -> list[GatewayStatus]:
        return [GatewayStatus(name, t.state, t.streak, t.pending_since is not None, t.last_status,
                              t.last_probe_at, t.changed_at) for name, t in sorted(self._tracked.items())]

    def pop_changes(self) -> list[StateChange]:
        """Every state change since the last call, oldest first."""
        changes, self._changes = self._changes, []
        return changes

    # -- the machine -----------------------------------------------------------------------------------
    def _settle(self, name: str, t: _Tracked, status: int | None, now: float) -> StateChange | None:
        t.pending_since = None
        t.last_status = status
        failed = status is None or status in self.failure_codes
        what = "no answer" if status is None else str(status)
        return self._step(name, t, Outcome.FAILED if failed else Outcome.ANSWERED, now, what)

    def _step(self, name: str, t: _Tracked, outcome: Outcome, now: float, what: str) -> StateChange | None:
        target, threshold = TRANSITIONS[(t.state, outcome)]
        if target is None:
            t.streak = 0
            return None
        t.streak += 1
        needed = 1 if threshold is None else getattr(self, threshold)
        if t.streak < needed:
            return None
        old, t.state, t.streak, t.changed_at = t.state, target, 0, now
        reason = what if threshold is None else f"{needed} probe(s) {outcome} (last: {what})"
        return self._record(name, old, target, reason, now)

    def _record(self, name: str, old: Health, new: Health, reason: str, now: float | None) -> StateChange:
        change = StateChange(name, old, new, reason, now if now is not None else 0.0)
        self._changes.append(change)
        return change


def _same_target(a: Gateway, b: Gateway) -> bool:
    return (a.host, a.port, a.transport, a.probe) == (b.host, b.port, b.transport, b.probe)
