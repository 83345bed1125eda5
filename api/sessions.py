"""Short-lived session tokens for people at the web panel (POST /v1/session).

Why apart from api/tokens.py: an API token is long-lived, made by an operator
at the CLI and stored hashed in SQLite; a session is what a browser holds for
a few hours after a login, so it lives in this API process only (a restart
logs everyone out, which is fine for a session) and expires on its own.

Two ways in, each giving a session of the matching role:

* an API token (``sipledger token create``): the session gets the token's
  role and account, so the long-lived secret does not stay in the browser;
* an account's SIP credentials, ``user@domain`` + password, checked against
  the provisioning store's hashes exactly as the registrar's digest does
  (HA1 = H(user:domain:password), realm = domain): an ``account`` session of
  that ``user@domain``.

Guessing is bounded by the proxy's own lockout table (proxy/core/lockout.py):
``failures`` wrong answers from a source, or ``user_failures`` for one
account, within ``window_s`` lock it for ``lock_s`` (429 meanwhile).
Sessions are bounded too: at most ``max_sessions`` (the oldest go first).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from proxy.core.digest import compute_ha1
from proxy.core.lockout import Lockout, user_key
from proxy.infra.sqldb import utcnow
from proxy.provisioning.store import ProvisioningStore, subscriber_table

from .tokens import TokenInfo

__all__ = ["PREFIX", "Session", "Sessions", "check_sip_password"]

PREFIX = "sls_"
TTL_S = 8 * 3600                   # a working day at the panel


@dataclass(frozen=True)
class Session:
    info: TokenInfo
    token: str                     # shown once, to the browser that logged in
    expires_at: float              # epoch seconds


class Sessions:
    """Session tokens in memory, keyed by their SHA-256; thread-safe (routes run in the pool)."""

    def __init__(self, *, ttl_s: float = TTL_S, max_sessions: int = 10_000,
                 lockout: Lockout | None = None, clock: Callable[[], float] = time.time):
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.lockout = lockout or Lockout(failures=10, user_failures=20, window_s=300, lock_s=600, max_keys=10_000)
        self.clock = clock
        self._by_hash: OrderedDict[str, tuple[TokenInfo, float]] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, role: str, account: str, name: str) -> Session:
        token = PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(id="s-" + secrets.token_hex(5), role="admin" if role == "admin" else "account",
                         account=account, name=name, created_at=utcnow())
        expires = self.clock() + self.ttl_s
        with self._lock:
            self._by_hash[_sha(token)] = (info, expires)
            while len(self._by_hash) > self.max_sessions:
                self._by_hash.popitem(last=False)
        return Session(info, token, expires)

    def authenticate(self, token: str) -> TokenInfo | None:
        if not token.startswith(PREFIX) or len(token) > 128:
            return None
        key = _sha(token)
        with self._lock:
            found = self._by_hash.get(key)
            if found is None:
                return None
            if found[1] <= self.clock():
                del self._by_hash[key]
                return None
            return found[0]

    def expires_at(self, token: str) -> float | None:
        with self._lock:
            found = self._by_hash.get(_sha(token))
        return found[1] if found else None

    def revoke(self, token: str) -> bool:
        with self._lock:
            return self._by_hash.pop(_sha(token), None) is not None

    # -- guessing ------------------------------------------------------------------------------
    def locked(self, ip: str, user: str | None) -> bool:
        with self._lock:
            return self.lockout.locked(ip, user and user_key(*_split(user)), self.clock())

    def failed(self, ip: str, user: str | None) -> None:
        with self._lock:
            self.lockout.failure(ip, user and user_key(*_split(user)), self.clock())
            self.lockout.take_new_locks()          # nobody else shares these locks

    def succeeded(self, ip: str, user: str) -> None:
        with self._lock:
            self.lockout.success(ip, user_key(*_split(user)))


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _split(address: str) -> tuple[str, str]:
    user, _, domain = address.partition("@")
    return user, domain


def check_sip_password(store: ProvisioningStore, address: str, password: str) -> bool:
    """Does ``password`` open the subscriber ``user@domain``?  Compared as the
    registrar does, on the stored HA1 (SHA-256 when kept, else MD5; realm =
    domain, in lower case), in constant time."""
    user, _, domain = address.partition("@")
    domain = domain.lower()
    if not user or not domain or not password:
        return False
    t = subscriber_table
    with store._read() as conn:         # one row by its key (store.snapshot() would read every subscriber)
        row = conn.execute(select(t.c.ha1, t.c.ha1_sha256).where(t.c.username == user, t.c.domain == domain)).first()
    if row is None:
        compute_ha1("SHA-256", user, domain, password)     # the same work for unknown users
        return False
    if row.ha1_sha256:
        return hmac.compare_digest(compute_ha1("SHA-256", user, domain, password), row.ha1_sha256.lower())
    return hmac.compare_digest(compute_ha1("MD5", user, domain, password), (row.ha1 or "").lower())
