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
from typing import Generic, Protocol, TypeVar

from .models import ProvisioningSnapshot
from .store import ProvisioningStore

__all__ = ["LiveSnapshot", "LiveProvisioning"]

log = logging.getLogger(__name__)

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
    what = "provisioning"

    def __init__(self, store: ProvisioningStore, poll_interval: float = 1.0):
        super().__init__(store, poll_interval)

    def describe(self, snapshot: ProvisioningSnapshot) -> str:
        return (f"{len(snapshot.domains)} domains, {len(snapshot.users)} users, "
                f"{len(snapshot.aliases)} aliases")
