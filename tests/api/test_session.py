"""``/v1/session`` (api/routes/session.py, api/sessions.py): the panel's login.

An API token or a subscriber's SIP credentials give a session token of the
matching role that the whole API accepts; wrong answers lock the source; a
session ends at logout and at its expiry."""
from __future__ import annotations

import pytest

from api.sessions import Sessions, check_sip_password
from proxy.provisioning.store import ProvisioningStore
from tests.harness.api import ALICE, BOB, auth

pytestmark = pytest.mark.integration

PASSWORD = "a1ice-pw"


@pytest.fixture(scope="module")
def api(billing_api):
    """alice a subscriber (clear password), bob one with hashes only; both billing accounts."""
    store = ProvisioningStore(billing_api.state.provisioning_url)
    store.create_schema()
    for address, hashes_only in ((ALICE, False), (BOB, True)):
        user, domain = address.split("@")
        if domain not in store.list_domains():
            store.add_domain(domain)
        store.add_user(user, domain, PASSWORD, ha1_only=hashes_only)
        assert billing_api.call("POST", "/v1/accounts", json={"id": address}).status_code == 201
    store.close()
    return billing_api


@pytest.fixture(autouse=True)
def no_locks(api):
    """Each test starts with no sessions and no failures counted (one source: the test client)."""
    api.client.app.state.sessions = Sessions()
    yield
    api.client.app.state.sessions = Sessions()


def login(env, **body):
    return env.client.post("/v1/session", json=body)


def test_sip_credentials_give_an_account_session_kept_to_its_account(api):
    for address, typed in ((ALICE, ALICE), (BOB, BOB.replace("b.test", "B.Test"))):
        response = login(api, user=typed, password=PASSWORD)
        assert response.status_code == 201, response.text
        s = response.json()
        assert (s["role"], s["account"]) == ("account", address) and s["token"].startswith("sls_")
        who = api.client.get("/v1/session", headers=auth(s["token"])).json()
        assert (who["role"], who["account"], who["expires_ms"]) == ("account", address, s["expires_ms"])
    token = login(api, user=ALICE, password=PASSWORD).json()["token"]
    assert api.client.get(f"/v1/accounts/{ALICE}/balance", headers=auth(token)).status_code == 200
    other = api.client.get(f"/v1/accounts/{BOB}/balance", headers=auth(token))
    assert (other.status_code, other.json()["detail"]) == (403, f"this token may only read account {ALICE}")
    assert api.client.post(f"/v1/accounts/{ALICE}/topups", json={"amount": "1"},
                           headers={**auth(token), "Idempotency-Key": "k"}).status_code == 403


def test_an_api_token_gives_a_session_of_its_role(api):
    s = login(api, token=api.tokens["admin"]).json()
    assert (s["role"], s["account"]) == ("admin", "")
    assert api.client.get("/v1/accounts", headers=auth(s["token"])).status_code == 200
    s = login(api, token=api.tokens["alice"]).json()
    assert (s["role"], s["account"]) == ("account", ALICE)
    assert login(api, token=api.tokens["revoked"]).status_code == 401


@pytest.mark.parametrize("body", [
    {"user": ALICE, "password": "wrong"}, {"user": "nobody@a.test", "password": PASSWORD},
    {"user": "alice", "password": PASSWORD}, {"user": ALICE, "password": ""}, {},
])
def test_wrong_answers_are_one_401(api, body):
    response = login(api, **body)
    assert (response.status_code, response.json()) == (401, {"detail": "wrong user or password"})


def test_bodies_are_bounded(api):
    assert login(api, user=ALICE, password="x" * 129).status_code == 422
    assert login(api, token="slt_" + "x" * 200).status_code == 422


def test_logout_ends_the_session(api):
    token = login(api, user=ALICE, password=PASSWORD).json()["token"]
    assert api.client.delete("/v1/session", headers=auth(token)).status_code == 204
    response = api.client.get("/v1/session", headers=auth(token))
    assert (response.status_code, response.json()["detail"]) == (401, "invalid or revoked token")


def test_guessing_locks_the_source_even_for_the_right_password(api):
    for _ in range(10):
        assert login(api, user=BOB, password="guess").status_code == 401
    locked = login(api, user=ALICE, password=PASSWORD)
    assert (locked.status_code, locked.json()["detail"]) == (429, "too many failed logins; try again later")


def test_sessions_expire_and_are_bounded():
    now = [1000.0]
    sessions = Sessions(ttl_s=60, max_sessions=2, clock=lambda: now[0])
    first, second = sessions.issue("admin", "", "a"), sessions.issue("account", ALICE, "b")
    assert sessions.authenticate(first.token).role == "admin"
    assert sessions.authenticate(second.token).account == ALICE
    sessions.issue("account", BOB, "c")                       # the oldest goes
    assert sessions.authenticate(first.token) is None and sessions.authenticate(second.token) is not None
    now[0] += 60
    assert sessions.authenticate(second.token) is None
    assert sessions.authenticate("slt_" + second.token[4:]) is None and sessions.authenticate("sls_" + "x" * 200) is None


def test_the_password_check_is_the_registrars(api):
    store = api.state.provisioning_store
    assert check_sip_password(store, ALICE, PASSWORD) and check_sip_password(store, BOB, PASSWORD)
    assert check_sip_password(store, ALICE.upper().replace("ALICE", "alice"), PASSWORD)      # domains: any case
    assert not check_sip_password(store, ALICE, PASSWORD.upper()) and not check_sip_password(store, ALICE.upper(), PASSWORD)
    assert not check_sip_password(store, "@a.test", PASSWORD) and not check_sip_password(store, ALICE, "")
