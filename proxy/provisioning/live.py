"""Provisioning as a running proxy sees it: a snapshot refreshed when the store changes.

The runtime calls ``maybe_reload(now)`` from a timer; at most once per
``poll_interval`` it reads the store's change counter (one indexed row) and
rebuilds the snapshot only when the counter moved.  So ``user add`` in the CLI
takes effect in every worker within about a second, without a restart, and
requests never wait on the database.
"""
from __future__ import annotations

import logging

from .models import ProvisioningError, ProvisioningSnapshot
from .store import ProvisioningStore

__all__ = ["LiveProvisioning"]

log = logging.getLogger(__name__)


class LiveProvisioning:
    def __init__(self, store: ProvisioningStore, poll_interval: float = 1.0):
        self._store = store
        self.poll_interval = poll_interval
        # loading at start-up is allowed to fail loudly: a proxy without its
        # subscriber list should not start
        self._snapshot = store.snapshot()
        self._next_poll = float("-inf")
        self.last_error: str | None = None

    @property
    def snapshot(self) -> ProvisioningSnapshot:
        return self._snapshot

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
        except ProvisioningError as exc:
            if str(exc) != self.last_error:       # log once per distinct failure, not every second
                log.warning("provisioning reload failed, keeping version %d: %s",
                            self._snapshot.version, exc)
            self.last_error = str(exc)
            return False
        self.last_error = None
        self._snapshot = fresh
        log.info("provisioning reloaded: version %d, %d domains, %d users, %d aliases",
                 fresh.version, len(fresh.domains), len(fresh.users), len(fresh.aliases))
        return True
