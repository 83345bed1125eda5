"""Provisioning as a running proxy sees it: a snapshot refreshed when the store changes.

The runtime calls ``maybe_reload(now)`` from a timer; at most once per
``poll_interval`` it reads the store's change counter (one indexed row) and
rebuilds the snapshot only when the counter moved.  So ``user add`` in the CLI
takes effect in every worker within about a second, without a restart, and
requests never wait on the database.

``LiveSnapshot`` does this for any store with ``version()``, ``snapshot()``
(a value with a ``version``) and an ``error`` type (every ``SqlStore``);
``LiveProvisioning`` is it for the provisioning store.
"""
from __future__ import annotations

import logging
import time
from typing import Generic, Protocol, TypeVar

from .models import ProvisioningSnapshot
from .store import ProvisioningStore

__all__ = ["LiveSnapshot", "LiveProvisioning"]

log = logging.getLogger(__name__)

_MAX_UNSHARED = 10_000          # locks waiting to be written when the database is down

class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


S = TypeVar("S", bound=_Versioned)


class LiveSnapshot(Generic[S]):
    what = "data"                      # for the log lines: "<what> reloaded: ..."

    def __init__(self, store, poll_interval: float = 1.0):
        self._store = store
        self.poll_interval = poll_interval
        # loading at start-up is allowed to fail loudly: a proxy without its
        # data should not start
        self._snapshot: S = store.snapshot()
        self._next_poll = float("-inf")
        self.last_error: str | None = None

    @property
    def snapshot(self) -> S:
        return self._snapshot

    def describe(self, snapshot: S) -> str:
        """What a reload brought, for the log."""
        return ""

    def reloaded(self, snapshot: S, now: float) -> None:
        """Hook: a new snapshot was just taken."""

    def maybe_reload(self, now: float) -> bool:
        """Reload when the store changed; True when a new snapshot was taken.

        ``now`` is any monotonic clock.  A database failure keeps the previous
        snapshot (calls keep flowing on slightly old data) and is retried at
        the next interval.
        """
        if now < self._next_poll:
            return False
        self._next_poll = now + self.poll_interval
        try:
            if self._store.version() == self._snapshot.version:
                self.last_error = None
                return False
            fresh = self._store.snapshot()
        except self._store.error as exc:
            if str(exc) != self.last_error:       # log once per distinct failure, not every second
                log.warning("%s reload failed, keeping version %d: %s",
                            self.what, self._snapshot.version, exc)
            self.last_error = str(exc)
            return False
        self.last_error = None
        self._snapshot = fresh
        log.info("%s reloaded: version %d, %s", self.what, fresh.version, self.describe(fresh))
        self.reloaded(fresh, now)
        return True


class LiveProvisioning(LiveSnapshot[ProvisioningSnapshot]):
    """The provisioning snapshot, plus the authentication lockouts every worker shares.

    Lockouts travel at each poll: the locks this worker made since the last
    one are written (``share_lockouts`` only queues them: no database on the
    request path), and when the lockouts' own counter moved, ``lockouts`` is
    read again (a CLI unlock, another worker's lock).  The request path
    merges ``lockouts`` into its table when ``lockouts_version`` changes."""
    what = "provisioning"

    def __init__(self, store: ProvisioningStore, poll_interval: float = 1.0):
        super().__init__(store, poll_interval)
        self.lockouts: dict[str, float] = {}          # key -> locked until (epoch seconds)
        self.lockouts_version = -1                    # -1: not read yet
        self._unshared: list[tuple[str, float, int]] = []
        self._lockout_error: str | None = None
        self._fraud_alerts: list[dict] = []           # raised here, written at the next poll

    def share_fraud_alerts(self, rows: list[dict]) -> None:
        """Queue fraud alerts (fraud_alert columns) for the next poll (bounded)."""
        self._fraud_alerts.extend(rows)
        del self._fraud_alerts[:-_MAX_UNSHARED]

    def share_lockouts(self, locks: list[tuple[str, float, int]]) -> None:
        """Queue locks made by this worker for the next poll (bounded)."""
        self._unshared.extend(locks)
        del self._unshared[:-_MAX_UNSHARED]
        for key, until, _ in locks:
            self.lockouts[key] = until

    def maybe_reload(self, now: float) -> bool:
        due = now >= self._next_poll
        changed = super().maybe_reload(now)
        if due:
            self._exchange_lockouts(time.time())
            self._write_fraud_alerts()
        return changed

    def _write_fraud_alerts(self) -> None:
        if not self._fraud_alerts:
            return
        try:
            self._store.add_fraud_alerts(self._fraud_alerts)
            self._fraud_alerts = []
        except self._store.error as exc:
            log.warning("recording fraud alerts failed, retrying: %s", exc)

    def _exchange_lockouts(self, wall: float) -> None:
        store = self._store
        try:
            if self._unshared:
                store.add_lockouts(self._unshared, wall)
                self._unshared = []
            version = store.lockout_version()
            if version != self.lockouts_version:
                self.lockouts = {e.key: e.until for e in store.lockouts(wall)}
                self.lockouts_version = version
            self._lockout_error = None
        except store.error as exc:
            if str(exc) != self._lockout_error:
                log.warning("sharing authentication lockouts failed, retrying: %s", exc)
            self._lockout_error = str(exc)

    def describe(self, snapshot: ProvisioningSnapshot) -> str:
        return (f"{len(snapshot.domains)} domains, {len(snapshot.users)} users, "
                f"{len(snapshot.aliases)} aliases")
