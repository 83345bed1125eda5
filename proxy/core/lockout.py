"""fail2ban for digest authentication: too many failed password checks lock a key.

Keys are ``ip:<source address>`` (one guesser) and ``user:<user>@<domain>``
(many guessers against one account).  ``lockout_failures`` failures of a
source, or ``lockout_user_failures`` of a user, within ``window_s`` lock it for
``lock_s``; a locked key is refused before any password is checked, so a
locked guesser costs one dictionary lookup per request.

A user lock does not apply to the source the user last authenticated from:
otherwise anyone who knows an extension could lock its owner's phone out by
guessing on purpose.

Sans-I/O and bounded: at most ``max_keys`` failure counters and as many locks
(the oldest are dropped first), whatever an attacker sends.  Each worker owns
one table; locks are shared between workers and with the CLI through the
provisioning store (``new_locks`` goes out, ``sync`` brings the shared view
in: proxy/provisioning/live.py).  ``now`` is any clock in seconds, the same
one for every call; the shared view uses wall-clock seconds (time.time()).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Lockout", "ip_key", "user_key"]


def ip_key(ip: str) -> str:
    return f"ip:{ip}"


def user_key(user: str, domain: str) -> str:
    return f"user:{user}@{domain}"


@dataclass(slots=True)
class _Failures:
    first: float          # start of the current window
    count: int


class Lockout:
    def __init__(self, *, failures: int = 10, user_failures: int = 30, window_s: float = 60.0,
                 lock_s: float = 600.0, max_keys: int = 50_000):
        self.failures = failures              # per source; 0 = sources are never locked
        self.user_failures = user_failures    # per user; 0 = users are never locked
        self.window_s = window_s
        self.lock_s = lock_s
        self.max_keys = max_keys
        self._counts: OrderedDict[str, _Failures] = OrderedDict()
        self._locks: OrderedDict[str, float] = OrderedDict()     # key -> locked until
        self._good_source: OrderedDict[str, str] = OrderedDict()  # user key -> ip of its last success
        self.new_locks: list[tuple[str, float, int]] = []          # (key, until, failures) to share
        self.synced_version = -1              # of the shared view last merged (see sync)

    # -- questions -------------------------------------------------------------------------
    def locks_held(self, now: float) -> int:
        """Keys locked at ``now`` (a figure for metrics)."""
        return sum(1 for until in self._locks.values() if until > now)

    def locked(self, ip: str, user: str | None, now: float) -> bool:
        """Is this source, or this user from this source, locked out?"""
        if self._is_locked(ip_key(ip), now):
            return True
        return (user is not None and self._is_locked(user, now)
                and self._good_source.get(user) != ip)

    def _is_locked(self, key: str, now: float) -> bool:
        until = self._locks.get(key)
        if until is None:
            return False
        if until <= now:
            del self._locks[key]
            return False
        return True

    # -- outcomes ---------------------------------------------------------------------------
    def failure(self, ip: str, user: str | None, now: float) -> list[str]:
        """Count one failed password check; the keys this failure locked."""
        locked = []
        for key, limit in ((ip_key(ip), self.failures), (user, self.user_failures)):
            if key is not None and limit > 0 and self._count(key, now) >= limit:
                self._lock(key, now + self.lock_s, limit)
                locked.append(key)
        return locked

    def success(self, ip: str, user: str) -> None:
        """The user authenticated from ``ip``: that source stays exempt from a lock of the user."""
        self._good_source[user] = ip
        self._good_source.move_to_end(user)
        while len(self._good_source) > self.max_keys:
            self._good_source.popitem(last=False)

    def _count(self, key: str, now: float) -> int:
        entry = self._counts.get(key)
        if entry is None or now - entry.first > self.window_s:
            entry = _Failures(now, 0)
            self._counts[key] = entry
        self._counts.move_to_end(key)
        entry.count += 1
        while len(self._counts) > self.max_keys:
            self._counts.popitem(last=False)
        return entry.count

    def _lock(self, key: str, until: float, failures: int) -> None:
        self._locks[key] = until
        self._locks.move_to_end(key)
        self._counts.pop(key, None)
        self.new_locks.append((key, until, failures))
        while len(self._locks) > self.max_keys:
            self._locks.popitem(last=False)
        del self.new_locks[:-self.max_keys]

    # -- sharing ----------------------------------------------------------------------------
    def take_new_locks(self) -> list[tuple[str, float, int]]:
        out, self.new_locks = self.new_locks, []
        return out

    def sync(self, shared: dict[str, float], version: int) -> None:
        """Adopt the shared view (every worker's locks, minus what the CLI unlocked).
        Locks of ours not yet written out stay."""
        pending = {key: until for key, until, _ in self.new_locks}
        unlocked = set(self._locks) - set(shared) - set(pending)
        for key in unlocked:
            self._counts.pop(key, None)
        self._locks = OrderedDict(sorted({**shared, **pending}.items(), key=lambda kv: kv[1]))
        while len(self._locks) > self.max_keys:
            self._locks.popitem(last=False)
        self.synced_version = version

    def entries(self, now: float) -> dict[str, float]:
        """The locks in force: key -> until."""
        return {k: u for k, u in self._locks.items() if u > now}
