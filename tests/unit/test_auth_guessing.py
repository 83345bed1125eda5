"""Password guessing (issue 13): a verdict only for our own nonces, the same answer
for an unknown user and a wrong password, and a lockout after N failures, shared
by every worker and ended with `sipledger auth unlock`.  The real proxy core and
default script on an in-memory rig."""
from __future__ import annotations

import pytest

from proxy.core.digest import DigestAuthenticator, compute_ha1, compute_response, parse_digest
from proxy.core.ports import Target
from tests.harness.corefake import CoreRig

pytestmark = pytest.mark.clock

GUESSER = Target("udp", "203.0.113.7", 5060)
PHONE = Target("udp", "192.0.2.10", 5060)
REALM = "example.test"
# past authentication the OPTIONS is routed to bob, a subscriber with no phone
# registered (OPTIONS to the proxy itself are keep-alives, never challenged)
AUTHENTICATED = 480


@pytest.fixture
def rig(tmp_path):
    rig = CoreRig(tmp_path, auth=True)
    rig.cli("domain", "add", REALM)
    rig.cli("user", "add", "alice@example.test", "--password", "a-secret")
    rig.cli("user", "add", "bob@example.test", "--password", "b-secret")
    return rig


def options(source: Target, n: int, *, user="alice", creds: str | None = None, agent="phone-a") -> str:
    auth = f"Proxy-Authorization: {creds}\n" if creds else ""
    return f"""OPTIONS sip:bob@example.test SIP/2.0
Via: SIP/2.0/UDP {source.host}:{source.port};branch=z9hG4bKg{n};rport
From: <sip:{user}@example.test>;tag=g{n}
To: <sip:bob@example.test>
Call-ID: guess-{n}
CSeq: 1 OPTIONS
Max-Forwards: 70
User-Agent: {agent}
{auth}Content-Length: 0

"""


_fresh = iter(range(1000, 10**6))


def challenge(rig, source=GUESSER, agent="phone-a") -> dict[str, str]:
    (resp, _), = rig.receive(options(source, next(_fresh), agent=agent), source)
    assert resp.status == 407
    return parse_digest(resp.get("proxy-authenticate"))


def credentials(nonce: str, password: str, *, user="alice", n=1) -> str:
    uri = "sip:bob@example.test"
    ha1 = compute_ha1("MD5", user, REALM, password)
    response = compute_response("MD5", ha1, nonce, "OPTIONS", uri, "auth", f"{n:08x}", "c0ffee")
    return (f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={n:08x}, cnonce="c0ffee"')


def attempt(rig, source, nonce, password, n, user="alice"):
    """The final answer to one guess: (status, reason)."""
    out = rig.receive(options(source, n, user=user, creds=credentials(nonce, password, user=user, n=n)), source)
    (resp, _), = [(m, t) for m, t in out if m.status and m.status >= 200]
    return resp.status, resp.reason


def test_unknown_user_and_wrong_password_get_the_same_answer(rig):
    nonce = challenge(rig)["nonce"]
    assert attempt(rig, GUESSER, nonce, "guess", 1) == attempt(rig, GUESSER, nonce, "guess", 2, user="nobody")
    assert attempt(rig, GUESSER, nonce, "guess", 3) == (403, "Forbidden")


def test_a_made_up_nonce_gets_a_fresh_challenge_not_a_verdict(rig):
    out = rig.receive(options(GUESSER, 1, creds=credentials("bWFkZSB1cCBub25jZQ", "guess")), GUESSER)
    assert [m.status for m, _ in out] == [407]
    fresh = parse_digest(out[0][0].get("proxy-authenticate"))
    assert fresh["nonce"] != "bWFkZSB1cCBub25jZQ" and "stale" not in fresh


def test_ten_failures_lock_the_source_before_any_password_check(rig, monkeypatch):
    nonce = challenge(rig)["nonce"]
    answers = [attempt(rig, GUESSER, nonce, f"guess{i}", i) for i in range(1, 11)]
    assert answers == [(403, "Forbidden")] * 10
    checks = []
    real_verify = rig.core.authenticator.verify
    monkeypatch.setattr(rig.core.authenticator, "verify", lambda *a, **k: checks.append(a) or real_verify(*a, **k))
    status, reason = attempt(rig, GUESSER, nonce, "a-secret", 11)     # even the right password now
    assert status == 403 and "too many failures" in reason and checks == []
    # a locked source gets no new challenges either, and others are not affected
    (resp, _), = rig.receive(options(GUESSER, 12), GUESSER)
    assert resp.status == 403
    assert attempt(rig, PHONE, challenge(rig, PHONE)["nonce"], "a-secret", 13)[0] == AUTHENTICATED


def test_a_guessed_user_is_locked_for_every_source_but_its_own_phone(rig):
    phone_nonce = challenge(rig, PHONE)["nonce"]
    assert attempt(rig, PHONE, phone_nonce, "a-secret", 1)[0] == AUTHENTICATED       # alice's phone, known good
    for i in range(30):                      # 3 guesses each from 10 sources: no source is locked
        source = Target("udp", f"203.0.113.{100 + i // 3}", 5060)
        assert attempt(rig, source, challenge(rig, source)["nonce"], f"guess{i}", 2 + i)[0] == 403
    elsewhere = Target("udp", "198.51.100.99", 5060)
    status, reason = attempt(rig, elsewhere, challenge(rig, elsewhere)["nonce"], "a-secret", 40)
    assert status == 403 and "too many failures" in reason
    assert attempt(rig, PHONE, phone_nonce, "a-secret", 41)[0] == AUTHENTICATED


def test_lockouts_are_shared_with_other_workers_and_the_cli(rig, tmp_path):
    nonce = challenge(rig)["nonce"]
    for i in range(1, 11):
        attempt(rig, GUESSER, nonce, f"guess{i}", i)
    rig.reload()                                           # the worker's poll writes the lock
    assert "ip:203.0.113.7" in rig.cli("auth", "lockouts")
    other = CoreRig(tmp_path, auth=True)                   # a second worker on the same data
    other.reload()
    status, reason = attempt(other, GUESSER, "bm9uY2U", "a-secret", 1)
    assert status == 403 and "too many failures" in reason
    assert "unlocked ip:203.0.113.7" in rig.cli("auth", "unlock", "203.0.113.7")
    other.reload()
    assert attempt(rig, GUESSER, challenge(rig)["nonce"], "a-secret", 20)[0] == AUTHENTICATED
    assert attempt(other, GUESSER, challenge(other)["nonce"], "a-secret", 21)[0] == AUTHENTICATED
    assert "ip:203.0.113.7" not in rig.cli("auth", "lockouts")


def test_algorithms_per_domain_and_per_user_agent(rig):
    from proxy.infra.config import AuthAlgorithmsForDomain, AuthAlgorithmsForUserAgent, AuthSettings
    settings = AuthSettings(
        per_domain=(AuthAlgorithmsForDomain("Example.test.", ("SHA-256", "MD5")),),
        per_user_agent=(AuthAlgorithmsForUserAgent("baresip", ("MD5",)),))
    rig.core.authenticator = DigestAuthenticator.from_settings(b"k" * 32, settings)

    def offered(agent):
        (resp, _), = rig.receive(options(GUESSER, next(_fresh), agent=agent), GUESSER)
        return [parse_digest(v)["algorithm"] for v in resp.get_all("proxy-authenticate")]

    assert offered("Yealink SIP-T46") == ["SHA-256", "MD5"]
    assert offered("baresip v1.0.0 (x86_64/linux)") == ["MD5"]
    default = DigestAuthenticator.from_settings(b"k" * 32, AuthSettings())
    rig.core.authenticator = default
    assert offered("Yealink SIP-T46") == ["MD5"]
