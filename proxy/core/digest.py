"""Digest authentication for SIP (RFC 2617, RFC 7616, RFC 3261 §22.4). No I/O.

Nonces are stateless: each one carries its issue time, the issuing worker id,
a per-process instance tag and a random salt, sealed by an HMAC under the
shared secret.  A worker can therefore check any nonce it issued without
remembering it, and only has to remember which nonce-counts (nc) it has
already accepted, to refuse replays.

A nonce issued by another worker, or by an earlier run of this worker, is
answered as *stale* (the client silently retries with a fresh nonce): the
replay memory lives in one worker process, so accepting a nonce that worker
never tracked would let a captured request be replayed on another worker, or
after a restart.  SO_REUSEPORT keeps one client on one worker, so this costs
at most one extra round trip when that mapping changes.

Verification order matters:

1. The nonce must be ours (its HMAC checks out) before any password is
   looked at.  A made-up or foreign nonce gets a fresh challenge, never a
   verdict: a guesser has to fetch a challenge, and every answer it gets
   about a password comes from a nonce we issued.
2. The response is checked before the nonce's *freshness*: an expired (or
   other worker's) but genuine nonce is told "stale" only with a correct
   response (RFC 7616 §3.3); with a wrong one it is a wrong password.
3. A nonce-count is recorded only for a correct response, so a forger
   cannot burn a legitimate client's nc values.
4. An unknown user costs the same hashing as a known one and gets the same
   answer from the caller of ``verify`` (no user enumeration): the reasons
   differ only inside ``AuthResult`` (``wrong_credentials`` is True for both).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.infra.config import AuthSettings
from proxy.sip.headers import split_commas, unquote
from proxy.sip.uri import parse_uri

from .authpolicy import AuthPolicy, lockout_from_settings
from .lockout import Lockout

if TYPE_CHECKING:
    from proxy.provisioning.models import Credentials
    from proxy.sip.message import SipMessage

__all__ = [
    "AuthResult", "DigestAuthenticator", "WRONG_CREDENTIALS", "compute_ha1", "compute_response",
    "find_credentials", "parse_digest",
]

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_NONCE_LAYOUT = struct.Struct(">qH4s8s")   # issued (ms), worker, instance, salt
_MAC_LEN = 16
_MAX_HEADER = 4096                          # longer Authorization values are refused unparsed
_CLOCK_SKEW = 5.0                           # seconds a nonce may seem to come from the future
# verdicts about the password itself: answered identically, counted by the lockout
WRONG_CREDENTIALS = frozenset({"unknown-user", "wrong-password", "algorithm-unavailable"})


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), the secret a subscriber's digest is keyed with."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def compute_response(algorithm: str, ha1: str, nonce: str, method: str, uri: str,
                     qop: str | None = None, nc: str | None = None,
                     cnonce: str | None = None) -> str:
    """The request-digest of RFC 7616 §3.4.1 (qop=auth) or RFC 2069 (no qop)."""
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")


def _hash(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()


def _canonical_algorithm(name: str) -> str | None:
    upper = name.strip().upper()
    return upper if upper in _HASHES else None


# -- parsing -------------------------------------------------------------------

def parse_digest(header_value: str) -> dict[str, str] | None:
    """``Digest a="x", b=y`` → {"a": "x", "b": "y"} (names lower-cased), or
    None when the value is not a well-formed Digest credentials/challenge."""
    if not isinstance(header_value, str) or len(header_value) > _MAX_HEADER:
        return None
    scheme, _, rest = header_value.strip().partition(" ")
    if scheme.lower() != "digest" or not rest.strip():
        return None
    params: dict[str, str] = {}
    for item in split_commas(rest):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name or name in params:
            return None
        value = value.strip()
        if value.startswith('"') and (len(value) < 2 or not value.endswith('"')):
            return None
        params[name] = unquote(value)
    return params


def find_credentials(message: "SipMessage", header_key: str, realm: str) -> tuple[str, dict[str, str]] | None:
    """The Authorization / Proxy-Authorization value meant for ``realm``, and
    its parameters (``parse_digest``: handed on to ``verify`` rather than
    parsed again).

    A request that crossed several proxies can carry one credentials line per
    realm; each is its own header line (RFC 3261 §7.3.1 exempts these headers
    from comma-joining), so lines are read whole, never split on commas.
    """
    for value in message.get_all(header_key):
        params = parse_digest(value)
        if params is not None and params.get("realm") == realm:
            return value, params
    return None


# -- results -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of one verification.

    ``reason`` is one of: ok, malformed, realm-mismatch, bad-algorithm,
    uri-mismatch, foreign-nonce (not sealed by our secret: answer with a fresh
    challenge, no verdict), unknown-user, algorithm-unavailable (no password
    and no HA1 for the algorithm the client chose), wrong-password, stale,
    replay.  When ``stale`` is set the caller re-challenges with
    ``stale=True``: the client's password was right, only the nonce was not
    acceptable.
    """
    ok: bool
    reason: str
    username: str | None = None
    realm: str | None = None
    algorithm: str | None = None
    stale: bool = False

    @property
    def rechallenge(self) -> bool:
        """Answer with a fresh challenge rather than a verdict."""
        return self.stale or self.reason == "foreign-nonce"

    @property
    def wrong_credentials(self) -> bool:
        """A failed password check (unknown user or wrong password alike)."""
        return self.reason in WRONG_CREDENTIALS


def _fail(reason: str, params: dict[str, str] | None = None, algorithm: str | None = None,
          *, stale: bool = False) -> AuthResult:
    params = params or {}
    return AuthResult(False, reason, params.get("username"), params.get("realm"), algorithm, stale)


@dataclass(frozen=True, slots=True)
class _Nonce:
    issued: float
    worker: int
    instance: bytes


@dataclass(slots=True)
class _Seen:
    last_nc: int
    expires: float


# -- the authenticator ---------------------------------------------------------------

class DigestAuthenticator:
    """Issues challenges and verifies credentials for one worker process.

    ``now`` is wall-clock seconds (time.time()); it is only compared with
    times this same object put into its nonces.
    """

    def __init__(self, secret: bytes, *, nonce_ttl: float = 300.0, worker: int = 0,
                 algorithms: Iterable[str] = ("MD5",), max_tracked: int = 100_000,
                 policy: AuthPolicy | None = None, lockout: Lockout | None = None):
        if not secret:
            raise ValueError("digest secret must not be empty")
        if not 0 <= worker <= 0xFFFF:
            raise ValueError("worker id must fit in 16 bits")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        algos = []
        for name in algorithms:
            canonical = _canonical_algorithm(name)
            if canonical is None:
                raise ValueError(f"unsupported digest algorithm {name!r}")
            algos.append(canonical)
        if not algos:
            raise ValueError("at least one digest algorithm is needed")
        self._secret = bytes(secret)
        self.nonce_ttl = float(nonce_ttl)
        self.worker = worker
        self.algorithms = tuple(algos)
        # what each challenge offers (per domain / User-Agent) and the guessing lockout
        self.policy = policy or AuthPolicy(self.algorithms)
        unsupported = set(self.policy.every_algorithm) - set(self.algorithms)
        if unsupported:
            self.algorithms += tuple(sorted(unsupported))
        self.lockout = lockout or lockout_from_settings(AuthSettings())
        # distinguishes this process from an earlier run of the same worker id,
        # whose replay memory is gone
        self._instance = os.urandom(4)
        self._seen: dict[str, _Seen] = {}
        self._max_tracked = max_tracked
        # nonces issued at or before this time may have been forgotten to keep
        # memory bounded; unknown ones from then are answered as stale
        self._forgotten_until = float("-inf")
        self._next_purge = float("-inf")

    @classmethod
    def from_settings(cls, secret: bytes, settings: AuthSettings, *, worker: int = 0) -> "DigestAuthenticator":
        """The authenticator a worker runs with ``[auth]``: algorithms, rules and lockout."""
        policy = AuthPolicy.from_settings(settings)
        return cls(secret, nonce_ttl=settings.nonce_ttl_seconds, worker=worker,
                   algorithms=policy.every_algorithm, policy=policy,
                   lockout=lockout_from_settings(settings))

    # -- challenges -----------------------------------------------------------
    def challenge(self, realm: str, now: float, *, stale: bool = False,
                  algorithms: Iterable[str] | None = None) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, one per algorithm
        (``algorithms``, default the policy's default: one, MD5), in
        preference order (a client uses the first it supports, RFC 7616 §3.7).
        Each goes on its own header line."""
        realm_q = _quote(realm)
        values = []
        for algorithm in (self.policy.algorithms if algorithms is None else algorithms):
            value = (f'Digest realm={realm_q}, nonce="{self._new_nonce(now)}", '
                     f'algorithm={algorithm}, qop="auth"')
            if stale:
                value += ", stale=true"
            values.append(value)
        return values

    def _new_nonce(self, now: float) -> str:
        body = _NONCE_LAYOUT.pack(int(now * 1000), self.worker, self._instance, os.urandom(8))
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii").rstrip("=")

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:_MAC_LEN]

    def _open_nonce(self, nonce: str) -> _Nonce | None:
        """The nonce's contents if this secret sealed it, else None."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_LAYOUT.size + _MAC_LEN:
            return None
        body, mac = raw[:_NONCE_LAYOUT.size], raw[_NONCE_LAYOUT.size:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        issued_ms, worker, instance, _salt = _NONCE_LAYOUT.unpack(body)
        return _Nonce(issued_ms / 1000.0, worker, instance)

    # -- verification ------------------------------------------------------------
    def verify(self, method: str, header_value: str, realm_expected: str,
               lookup: Callable[[str, str], "Credentials | None"], now: float,
               *, request_uri: str | None = None, algorithms: Iterable[str] | None = None,
               parsed: dict[str, str] | None = None) -> AuthResult:
        """Check one Authorization / Proxy-Authorization value.

        ``lookup(username, realm)`` returns the subscriber's credentials or
        None.  With ``request_uri`` the digest ``uri`` must name the same
        resource (RFC 7616 §3.4.6).  ``algorithms``: those the challenge
        offered (default: every supported one).  ``parsed``: ``header_value``
        already through ``parse_digest`` (``find_credentials`` gives both).
        Never raises on bad input.
        """
        self._maybe_purge(now)
        params = parse_digest(header_value) if parsed is None else parsed
        if params is None or not all(params.get(k) for k in ("username", "realm", "nonce",
                                                              "uri", "response")):
            return _fail("malformed", params)
        if params.get("userhash", "false").lower() != "false":
            return _fail("malformed", params)          # never offered, so never valid
        if params["realm"] != realm_expected:
            return _fail("realm-mismatch", params)
        algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
        if algorithm is None or algorithm not in (self.algorithms if algorithms is None else algorithms):
            return _fail("bad-algorithm", params)
        nc_value = _nonce_count(params)
        if nc_value is None:
            return _fail("malformed", params, algorithm)
        if request_uri is not None and not _same_resource(params["uri"], request_uri):
            return _fail("uri-mismatch", params, algorithm)

        nonce = self._open_nonce(params["nonce"])
        if nonce is None:
            # made up, or another secret's: no verdict, a fresh challenge.  One shaped
            # like ours is another proxy instance's with another [auth] secret
            # (docs/scale-out.md): stale=true, so the phone retries with the same
            # password instead of prompting or giving up.  Either way the answer is
            # the same whatever the password, so it tells a guesser nothing.
            return _fail("foreign-nonce", params, algorithm, stale=_nonce_shaped(params["nonce"]))

        creds = lookup(params["username"], params["realm"])
        ha1 = _ha1_for(creds, algorithm, params["username"], params["realm"]) if creds else None
        # an unknown user costs the same hashing as a known one (no timing difference)
        expected = compute_response(algorithm, ha1 or _dummy_ha1(algorithm, params), params["nonce"],
                                    method, params["uri"], params.get("qop"), params.get("nc"),
                                    params.get("cnonce"))
        matches = hmac.compare_digest(expected.encode(), params["response"].lower().encode("utf-8", "replace"))
        if creds is None:
            return _fail("unknown-user", params, algorithm)
        if ha1 is None:
            return _fail("algorithm-unavailable", params, algorithm)
        if not matches:
            return _fail("wrong-password", params, algorithm)

        if not self._nonce_current(nonce, now):
            return _fail("stale", params, algorithm, stale=True)
        verdict = self._record_use(params["nonce"], nonce, nc_value)
        if verdict != "ok":
            return _fail(verdict, params, algorithm, stale=verdict == "stale")
        return AuthResult(True, "ok", params["username"], params["realm"], algorithm)

    def _nonce_current(self, nonce: _Nonce, now: float) -> bool:
        return (nonce.worker == self.worker
                and hmac.compare_digest(nonce.instance, self._instance)
                and now - self.nonce_ttl <= nonce.issued <= now + _CLOCK_SKEW)

    def _record_use(self, nonce_text: str, nonce: _Nonce, nc_value: int) -> str:
        """Accept each (nonce, nc) once, with nc strictly increasing."""
        seen = self._seen.get(nonce_text)
        if seen is None:
            if nonce.issued <= self._forgotten_until:
                return "stale"                      # its history may have been evicted
            self._seen[nonce_text] = _Seen(nc_value, nonce.issued + self.nonce_ttl)
            self._enforce_bound()
            return "ok"
        if nc_value <= seen.last_nc:
            return "replay"
        seen.last_nc = nc_value
        return "ok"

    def _enforce_bound(self) -> None:
        while len(self._seen) > self._max_tracked:
            self._forget(next(iter(self._seen)))

    def _maybe_purge(self, now: float) -> None:
        if now >= self._next_purge:
            self.purge(now)
            self._next_purge = now + min(self.nonce_ttl, 60.0)

    def purge(self, now: float) -> int:
        """Forget nonces that expired (they are refused as stale anyway)."""
        dead = [k for k, v in self._seen.items() if v.expires < now]
        for k in dead:
            self._forget(k)
        return len(dead)

    def _forget(self, nonce_text: str) -> None:
        entry = self._seen.pop(nonce_text)
        # a forgotten nonce must never look unused again (eviction, or the
        # clock stepping back after a purge): refuse its era as stale
        self._forgotten_until = max(self._forgotten_until, entry.expires - self.nonce_ttl)

    @property
    def tracked_nonces(self) -> int:
        return len(self._seen)


def _nonce_count(params: dict[str, str]) -> int | None:
    """The nc value to track: parsed nc for qop=auth, 1 without qop (RFC 2069
    clients then get each nonce accepted once); None when malformed."""
    qop = params.get("qop")
    if qop is None:
        return None if "nc" in params or "cnonce" in params else 1
    if qop.lower() != "auth" or not params.get("cnonce"):
        return None
    nc = params.get("nc", "")
    if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
        return None
    value = int(nc, 16)
    return value if value > 0 else None


def _ha1_for(creds: "Credentials", algorithm: str, username: str, realm: str) -> str | None:
    if creds.password is not None:
        return compute_ha1(algorithm, username, realm, creds.password)
    stored = creds.ha1_md5 if algorithm == "MD5" else creds.ha1_sha256
    return stored.lower() if stored else None


def _dummy_ha1(algorithm: str, params: dict[str, str]) -> str:
    return compute_ha1(algorithm, params["username"], params["realm"], "")


def _same_resource(digest_uri: str, request_uri: str) -> bool:
    """Same scheme, user, host and port; URI parameters may differ (clients
    often drop ;transport= from the digest uri)."""
    if digest_uri == request_uri:
        return True
    try:
        a, b = parse_uri(digest_uri), parse_uri(request_uri)
    except ValueError:                      # UriError, or int() on odd digits in a port
        return False
    return (a.scheme, a.user, a.host, a.port) == (b.scheme, b.user, b.host, b.port)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nonce_shaped(nonce: str) -> bool:
    """Has the size of a sipledger nonce (any instance's), whatever sealed it."""
    return len(nonce) == len(base64.urlsafe_b64encode(bytes(_NONCE_LAYOUT.size + _MAC_LEN)).rstrip(b"="))
