"""Digest authentication: RFC test vectors, challenge → verify round trips, failures."""
from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.digest import (
    DigestAuthenticator,
    compute_ha1,
    compute_response,
    find_credentials,
    parse_digest,
)
from proxy.provisioning.models import Credentials
from proxy.sip.message import SipMessage

REALM = "example.test"
URI = "sip:example.test"
T0 = 1_700_000_000.0
SECRET = b"cluster secret"


# -- RFC worked examples --------------------------------------------------------

def test_rfc2617_section_3_5_example():
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response("MD5", ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET",
                                "/dir/index.html", "auth", "00000001", "0a4f113b")
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("algorithm, expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1_example(algorithm, expected):
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = compute_response(algorithm, ha1, "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                                "GET", "/dir/index.html", "auth", "00000001",
                                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert response == expected


def test_rfc2069_response_without_qop():
    ha1 = compute_ha1("MD5", "u", "r", "p")
    ha2 = hashlib.md5(b"REGISTER:sip:r").hexdigest()
    expected = hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    assert compute_response("MD5", ha1, "n", "REGISTER", "sip:r") == expected


# -- a tiny client ----------------------------------------------------------------

def plaintext(user="alice", password="s3cret"):
    return Credentials(user, REALM, password, None, None)


def ha1_only(user="alice", password="s3cret", md5=True, sha256=True):
    return Credentials(user, REALM, None,
                       compute_ha1("MD5", user, REALM, password) if md5 else None,
                       compute_ha1("SHA-256", user, REALM, password) if sha256 else None)


def lookup_for(*creds):
    table = {(c.username, c.domain): c for c in creds}
    return lambda user, realm: table.get((user, realm))


def pick(challenges, algorithm):
    for value in challenges:
        params = parse_digest(value)
        if params["algorithm"] == algorithm:
            return params
    raise AssertionError(f"no {algorithm} challenge in {challenges}")


def answer(challenge, *, user="alice", password="s3cret", method="REGISTER", uri=URI,
           nc="00000001", cnonce="0a4f113b", qop="auth", realm=None, algorithm=None):
    algorithm = algorithm or challenge["algorithm"]
    realm = realm or challenge["realm"]
    ha1 = compute_ha1(algorithm, user, realm, password)
    response = compute_response(algorithm, ha1, challenge["nonce"], method, uri,
                                qop, nc if qop else None, cnonce if qop else None)
    value = (f'Digest username="{user}", realm="{realm}", nonce="{challenge["nonce"]}", '
             f'uri="{uri}", response="{response}", algorithm={algorithm}')
    if qop:
        value += f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
    return value


@pytest.fixture
def auth():
    # both algorithms offered: an explicit choice (the default is one MD5 challenge)
    return DigestAuthenticator(SECRET, nonce_ttl=300.0, worker=1, algorithms=("SHA-256", "MD5"))


# -- challenges -----------------------------------------------------------------------

def test_challenge_offers_each_algorithm_in_preference_order(auth):
    values = auth.challenge(REALM, T0)
    assert [parse_digest(v)["algorithm"] for v in values] == ["SHA-256", "MD5"]
    for v in values:
        params = parse_digest(v)
        assert params["realm"] == REALM and params["qop"] == "auth" and "stale" not in params
    assert parse_digest(values[0])["nonce"] != parse_digest(values[1])["nonce"]


def test_default_is_one_md5_challenge():
    """baresip 1.0 fails on a second (SHA-256) challenge: one MD5 challenge unless configured."""
    values = DigestAuthenticator(SECRET).challenge(REALM, T0)
    assert [parse_digest(v)["algorithm"] for v in values] == ["MD5"]


def test_challenge_algorithms_chosen_per_request(auth):
    values = auth.challenge(REALM, T0, algorithms=("MD5",))
    assert [parse_digest(v)["algorithm"] for v in values] == ["MD5"]
    sha = pick(auth.challenge(REALM, T0), "SHA-256")
    # a response with an algorithm this request's challenge did not offer is refused
    assert auth.verify("REGISTER", answer(sha), REALM, lookup_for(plaintext()), T0,
                       algorithms=("MD5",)).reason == "bad-algorithm"


def test_challenge_stale_flag_and_realm_quoting(auth):
    values = auth.challenge('we "quote"', T0, stale=True)
    params = parse_digest(values[0])
    assert params["stale"] == "true" and params["realm"] == 'we "quote"'


def test_constructor_rejects_bad_settings():
    for kwargs in ({"worker": -1}, {"worker": 70000}, {"algorithms": ("SHA-512-256",)},
                   {"algorithms": ()}, {"nonce_ttl": 0}):
        with pytest.raises(ValueError):
            DigestAuthenticator(SECRET, **kwargs)
    with pytest.raises(ValueError):
        DigestAuthenticator(b"")


# -- round trips -------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
@pytest.mark.parametrize("creds", [plaintext(), ha1_only()], ids=["plaintext", "ha1-only"])
def test_round_trip(auth, algorithm, creds):
    challenge = pick(auth.challenge(REALM, T0), algorithm)
    result = auth.verify("REGISTER", answer(challenge), REALM, lookup_for(creds), T0 + 1,
                         request_uri=URI)
    assert result.ok and result.reason == "ok"
    assert (result.username, result.realm, result.algorithm) == ("alice", REALM, algorithm)


def test_algorithm_defaults_to_md5_when_client_omits_it(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    value = answer(challenge).replace(", algorithm=MD5", "")
    assert auth.verify("REGISTER", value, REALM, lookup_for(plaintext()), T0).ok


def test_response_hex_case_is_ignored(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    value = answer(challenge)
    response = parse_digest(value)["response"]
    value = value.replace(response, response.upper())
    assert auth.verify("REGISTER", value, REALM, lookup_for(plaintext()), T0).ok


def test_without_qop_each_nonce_is_accepted_once(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    value = answer(challenge, qop=None)
    lookup = lookup_for(plaintext())
    assert auth.verify("REGISTER", value, REALM, lookup, T0).ok
    assert auth.verify("REGISTER", value, REALM, lookup, T0).reason == "replay"


def test_nonce_count_must_increase(auth):
    challenge = pick(auth.challenge(REALM, T0), "SHA-256")
    lookup = lookup_for(plaintext())
    assert auth.verify("REGISTER", answer(challenge, nc="00000001"), REALM, lookup, T0).ok
    assert auth.verify("REGISTER", answer(challenge, nc="00000002"), REALM, lookup, T0).ok
    replayed = auth.verify("REGISTER", answer(challenge, nc="00000002"), REALM, lookup, T0)
    assert (replayed.ok, replayed.reason, replayed.stale) == (False, "replay", False)
    older = auth.verify("REGISTER", answer(challenge, nc="00000001"), REALM, lookup, T0)
    assert older.reason == "replay"
    assert auth.verify("REGISTER", answer(challenge, nc="0000000a"), REALM, lookup, T0).ok


# -- failures -----------------------------------------------------------------------------

def test_wrong_password(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    result = auth.verify("REGISTER", answer(challenge, password="guess"), REALM,
                         lookup_for(plaintext()), T0)
    assert (result.ok, result.reason, result.stale, result.username) == (False, "wrong-password", False, "alice")


def test_wrong_password_does_not_burn_the_nonce_count(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    lookup = lookup_for(plaintext())
    forged = answer(challenge, password="guess", nc="ffffffff")
    assert auth.verify("REGISTER", forged, REALM, lookup, T0).reason == "wrong-password"
    assert auth.verify("REGISTER", answer(challenge), REALM, lookup, T0).ok


def test_wrong_method_is_a_wrong_response(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    result = auth.verify("INVITE", answer(challenge), REALM, lookup_for(plaintext()), T0)
    assert result.reason == "wrong-password"


def test_unknown_user(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    result = auth.verify("REGISTER", answer(challenge, user="mallory"), REALM, lookup_for(plaintext()), T0)
    assert result.reason == "unknown-user"


def test_realm_mismatch(auth):
    challenge = pick(auth.challenge("other.test", T0), "MD5")
    result = auth.verify("REGISTER", answer(challenge), REALM, lookup_for(plaintext()), T0)
    assert result.reason == "realm-mismatch"


def test_uri_mismatch_only_when_request_uri_given(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    value = answer(challenge, uri="sip:elsewhere.test")
    lookup = lookup_for(plaintext())
    assert auth.verify("REGISTER", value, REALM, lookup, T0, request_uri=URI).reason == "uri-mismatch"
    assert auth.verify("REGISTER", value, REALM, lookup, T0).ok


def test_uri_parameters_may_differ(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    value = answer(challenge, uri="sip:example.test")
    assert auth.verify("REGISTER", value, REALM, lookup_for(plaintext()), T0,
                       request_uri="sip:EXAMPLE.test;transport=tcp").ok


def test_algorithm_not_offered_is_refused():
    md5_only = DigestAuthenticator(SECRET, algorithms=("MD5",))
    challenge = pick(md5_only.challenge(REALM, T0), "MD5")
    value = answer(challenge, algorithm="SHA-256")
    assert md5_only.verify("REGISTER", value, REALM, lookup_for(plaintext()), T0).reason == "bad-algorithm"
    assert md5_only.verify("REGISTER", value.replace("SHA-256", "MD5-sess"), REALM,
                           lookup_for(plaintext()), T0).reason == "bad-algorithm"


def test_imported_md5_ha1_cannot_answer_sha256(auth):
    creds = ha1_only(sha256=False)
    lookup = lookup_for(creds)
    sha = pick(auth.challenge(REALM, T0), "SHA-256")
    assert auth.verify("REGISTER", answer(sha), REALM, lookup, T0).reason == "algorithm-unavailable"
    md5 = pick(auth.challenge(REALM, T0), "MD5")
    assert auth.verify("REGISTER", answer(md5), REALM, lookup, T0).ok


def test_expired_nonce_with_right_password_is_stale(auth):
    challenge = pick(auth.challenge(REALM, T0), "SHA-256")
    lookup = lookup_for(plaintext())
    result = auth.verify("REGISTER", answer(challenge), REALM, lookup, T0 + 301)
    assert (result.ok, result.reason, result.stale) == (False, "stale", True)
    # right at the end of its life it is still good
    fresh = pick(auth.challenge(REALM, T0), "SHA-256")
    assert auth.verify("REGISTER", answer(fresh), REALM, lookup, T0 + 300).ok


def test_expired_nonce_with_wrong_password_is_not_stale(auth):
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    result = auth.verify("REGISTER", answer(challenge, password="guess"), REALM,
                         lookup_for(plaintext()), T0 + 1000)
    assert (result.reason, result.stale) == ("wrong-password", False)


def test_nonce_from_another_worker_is_stale(auth):
    other = DigestAuthenticator(SECRET, worker=2)
    challenge = pick(other.challenge(REALM, T0), "MD5")
    result = auth.verify("REGISTER", answer(challenge), REALM, lookup_for(plaintext()), T0)
    assert (result.reason, result.stale) == ("stale", True)


def test_nonce_from_an_earlier_run_of_the_same_worker_is_stale(auth):
    before_restart = DigestAuthenticator(SECRET, worker=1)
    challenge = pick(before_restart.challenge(REALM, T0), "MD5")
    assert auth.verify("REGISTER", answer(challenge), REALM, lookup_for(plaintext()), T0).reason == "stale"


def test_forged_or_foreign_secret_nonce_gets_a_fresh_challenge_never_a_verdict(auth):
    """A made-up nonce must not buy a password verdict: the guesser needs our challenge."""
    lookup = lookup_for(plaintext())
    forged = {"nonce": base64.urlsafe_b64encode(b"x" * 38).decode().rstrip("="),
              "realm": REALM, "algorithm": "MD5"}
    for password in ("s3cret", "guess"):
        result = auth.verify("REGISTER", answer(forged, password=password), REALM, lookup, T0)
        # shaped like ours: another instance's secret (docs/scale-out.md), re-challenged as stale
        assert (result.ok, result.reason, result.rechallenge, result.stale) == (False, "foreign-nonce", True, True)
        assert not result.wrong_credentials
    garbage = dict(forged, nonce="not base64 at all!")
    result = auth.verify("REGISTER", answer(garbage), REALM, lookup, T0)
    assert (result.reason, result.rechallenge, result.stale) == ("foreign-nonce", True, False)
    other_secret = DigestAuthenticator(b"another secret", worker=1)
    theirs = pick(other_secret.challenge(REALM, T0), "MD5")
    for password in ("s3cret", "guess"):
        result = auth.verify("REGISTER", answer(theirs, password=password), REALM, lookup, T0)
        assert (result.reason, result.rechallenge, result.stale) == ("foreign-nonce", True, True)


def test_unknown_user_costs_the_same_hashing_and_is_a_wrong_credential(auth, monkeypatch):
    import proxy.core.digest as digest
    calls = []
    real = digest._hash
    monkeypatch.setattr(digest, "_hash", lambda algorithm, text: calls.append(algorithm) or real(algorithm, text))
    lookup = lookup_for(plaintext())
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    calls.clear()
    wrong = auth.verify("REGISTER", answer(challenge, password="guess"), REALM, lookup, T0)
    work_wrong, calls[:] = len(calls), []
    unknown = auth.verify("REGISTER", answer(challenge, user="mallory", password="guess"), REALM, lookup, T0)
    assert (wrong.reason, unknown.reason) == ("wrong-password", "unknown-user")
    assert wrong.wrong_credentials and unknown.wrong_credentials
    assert len(calls) == work_wrong > 0


def test_nonce_from_the_future_is_stale(auth):
    challenge = pick(auth.challenge(REALM, T0 + 3600), "MD5")
    assert auth.verify("REGISTER", answer(challenge), REALM, lookup_for(plaintext()), T0).reason == "stale"


# -- bounded memory ---------------------------------------------------------------------------

def test_expired_nonces_are_purged(auth):
    lookup = lookup_for(plaintext())
    for i in range(5):
        challenge = pick(auth.challenge(REALM, T0 + i), "MD5")
        assert auth.verify("REGISTER", answer(challenge), REALM, lookup, T0 + i).ok
    assert auth.tracked_nonces == 5
    assert auth.purge(T0 + 302.5) == 3
    assert auth.tracked_nonces == 2


def test_purge_runs_on_its_own_during_verify(auth):
    lookup = lookup_for(plaintext())
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    assert auth.verify("REGISTER", answer(challenge), REALM, lookup, T0).ok
    later = pick(auth.challenge(REALM, T0 + 400), "MD5")
    assert auth.verify("REGISTER", answer(later), REALM, lookup, T0 + 400).ok
    assert auth.tracked_nonces == 1


def test_purged_nonce_stays_refused_if_the_clock_steps_back(auth):
    lookup = lookup_for(plaintext())
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    first = answer(challenge)
    assert auth.verify("REGISTER", first, REALM, lookup, T0).ok
    auth.purge(T0 + 301)
    assert auth.verify("REGISTER", first, REALM, lookup, T0 + 1).ok is False


def test_tracking_is_bounded_and_evicted_nonces_cannot_be_replayed():
    auth = DigestAuthenticator(SECRET, max_tracked=3)
    lookup = lookup_for(plaintext())
    used = []
    for i in range(4):
        challenge = pick(auth.challenge(REALM, T0 + i), "MD5")
        used.append(answer(challenge))
        assert auth.verify("REGISTER", used[-1], REALM, lookup, T0 + i).ok
    assert auth.tracked_nonces == 3
    # the evicted first nonce must not be accepted again
    assert auth.verify("REGISTER", used[0], REALM, lookup, T0 + 5).reason == "stale"
    # newer nonces work as usual
    fresh = pick(auth.challenge(REALM, T0 + 6), "MD5")
    assert auth.verify("REGISTER", answer(fresh), REALM, lookup, T0 + 6).ok


# -- malformed input ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "", "Basic dXNlcjpwYXNz", "Digest", "Digest ", 'Digest username="alice"',
    'Digest username="alice", realm="example.test", nonce="n", uri="sip:x"',   # no response
    'Digest username="alice", username="bob", realm="example.test", nonce="n", uri="u", response="r"',
    'Digest username="alice, realm="example.test"',
    'Digest username=alice realm=example.test',
    'Digest username="a", realm="example.test", nonce="n", uri="u", response="r", qop=auth',   # no nc
    'Digest username="a", realm="example.test", nonce="n", uri="u", response="r", qop=auth, nc=1, cnonce="c"',
    'Digest username="a", realm="example.test", nonce="n", uri="u", response="r", qop=auth, nc=00000000, cnonce="c"',
    'Digest username="a", realm="example.test", nonce="n", uri="u", response="r", qop=auth-int, nc=00000001, cnonce="c"',
    'Digest username="a", realm="example.test", nonce="n", uri="u", response="r", nc=00000001',
    'Digest username="a", realm="example.test", nonce="n", uri="u", response="r", userhash=true',
    "Digest " + "x" * 5000,
])
def test_malformed_credentials(auth, value):
    result = auth.verify("REGISTER", value, REALM, lookup_for(plaintext()), T0)
    assert (result.ok, result.reason) == (False, "malformed")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_header_values_never_raise(value):
    auth = DigestAuthenticator(SECRET)
    result = auth.verify("REGISTER", value, REALM, lookup_for(plaintext()), T0, request_uri=URI)
    assert result.ok is False


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["username", "realm", "nonce", "uri", "response", "qop", "nc",
                                        "cnonce", "algorithm", "opaque"]),
                       st.text(max_size=40), min_size=3))
def test_arbitrary_digest_params_never_raise(params):
    auth = DigestAuthenticator(SECRET)
    value = "Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items())
    assert auth.verify("REGISTER", value, REALM, lookup_for(plaintext()), T0, request_uri=URI).ok is False


# -- picking the right credentials ------------------------------------------------------------

def test_find_credentials_picks_the_line_for_our_realm(auth):
    msg = SipMessage.request("INVITE", "sip:bob@example.test")
    theirs = 'Digest username="alice", realm="upstream.test", nonce="a", uri="sip:x", response="0"'
    ours = 'Digest username="alice", realm="example.test", nonce="b", uri="sip:x", response="1"'
    msg.add("proxy-authorization", theirs)
    msg.add("proxy-authorization", ours)
    msg.add("authorization", 'Digest username="alice", realm="example.test", nonce="c"')
    assert find_credentials(msg, "proxy-authorization", REALM) == (ours, parse_digest(ours))
    assert find_credentials(msg, "proxy-authorization", "upstream.test") == (theirs, parse_digest(theirs))
    assert find_credentials(msg, "proxy-authorization", "nowhere.test") is None
    found = find_credentials(msg, "authorization", REALM)
    assert found is not None and found[0].endswith('nonce="c"') and found[1]["nonce"] == "c"


def test_find_credentials_skips_garbage_lines():
    msg = SipMessage.request("REGISTER", URI)
    msg.add("authorization", "Basic abc")
    msg.add("authorization", 'Digest realm="example.test", username="x"')
    assert find_credentials(msg, "authorization", REALM) == ('Digest realm="example.test", username="x"',
                                                             {"realm": "example.test", "username": "x"})


def test_verify_takes_the_parameters_find_credentials_parsed(auth):
    """The script hands ``verify`` what ``find_credentials`` already parsed: the
    same verdicts as from the raw value, the wrong password included."""
    challenge = pick(auth.challenge(REALM, T0), "MD5")
    for password, ok in (("s3cret", True), ("guess", False)):
        msg = SipMessage.request("REGISTER", URI)
        msg.add("authorization", answer(challenge, password=password, nc=f"0000000{int(ok) + 1}"))
        value, params = find_credentials(msg, "authorization", REALM)
        result = auth.verify("REGISTER", value, REALM, lookup_for(plaintext()), T0, parsed=params)
        assert result.ok is ok
        assert result.reason == ("ok" if ok else "wrong-password")
