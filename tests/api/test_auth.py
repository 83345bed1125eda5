"""Who may call what, on every route: 401 without a valid token (before anything
else), 403 for an account token on admin routes, and the one rule for other
accounts (api/deps.py, docs/api.md "Other accounts"): an account token naming
another account is 403 whether that account exists or not; an admin naming a
missing account is 404; a CDR of another account is 404 like an unknown id."""
from __future__ import annotations

import re
import uuid

import pytest

from api.tokens import open_store
from tests.harness.api import ALICE, BOB, auth, v1_routes

pytestmark = pytest.mark.integration

GHOST = "ghost@c.test"           # no such account anywhere
FORBIDDEN = {"detail": f"this token may only read account {ALICE}"}
SAMPLE = {"cdr_id": str(uuid.uuid4()), "call_id": "no-such-call@x", "account": ALICE, "report": "gateways", "plan": "retail", "rate_id": "1",
          "run_id": str(uuid.uuid4())}
# the provisioning routes' path parameters (tests/api/test_provisioning.py); every one of those routes is admin only
SAMPLE |= {"address": ALICE, "alias": "100@a.test", "domain": "a.test", "name": "gw1", "route_id": "1", "dpid": "0",
           "rule_id": "1", "list_name": "default", "prefix": "0900", "cidr": "192.0.2.0/24", "group": "intl",
           "token_id": "abc"}
# what an account token may call (on its own account); every other /v1 route is admin only
ACCOUNT_READS = {("GET", p) for p in (
    "/v1/cdrs", "/v1/cdrs/{cdr_id}", "/v1/calls", "/v1/calls/{call_id}", "/v1/stats", "/v1/quality", "/v1/accounts",
    "/v1/accounts/{account}",
    "/v1/accounts/{account}/balance", "/v1/accounts/{account}/rates", "/v1/accounts/{account}/ledger",
    "/v1/accounts/{account}/reports/{report}", "/v1/calls/{call_id}/trace", "/v1/session")} | {
    ("DELETE", "/v1/session")}       # who am I, log out (the login, POST /v1/session, takes no token)
# the reads that name an account in the path (ReadableAccount)
ACCOUNT_PATHS = ["/v1/accounts/{a}", "/v1/accounts/{a}/balance", "/v1/accounts/{a}/rates",
                 "/v1/accounts/{a}/ledger", "/v1/accounts/{a}/reports/statement"]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m[1]], path)


@pytest.fixture(scope="module")
def accounts(billing_api):
    for account in (ALICE, BOB):
        assert billing_api.call("POST", "/v1/accounts", json={"id": account}).status_code == 201
    return billing_api


def test_every_route_needs_a_valid_token(billing_api):
    env = billing_api
    routes = v1_routes()
    assert len(routes) >= 28
    for method, path in routes:
        for headers in ({}, auth("slt_not-a-real-token"), auth(env.tokens["revoked"]), auth("garbage"),
                        {"Authorization": f"Basic {env.tokens['admin']}"}):
            response = env.client.request(method, concrete(path), headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert isinstance(response.json()["detail"], str) and response.json()["detail"]
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_authentication_comes_before_parameters(cdr_api):
    client = cdr_api.client
    assert client.get("/v1/cdrs", params={"limit": "x"}).status_code == 401
    assert client.get("/v1/cdrs", params={"no_such_filter": "1"}).status_code == 401
    assert client.get("/v1/cdrs/not-a-uuid").status_code == 401
    assert client.get("/v1/accounts/x/ledger", params={"from": "2026-12", "to": "2026-11"}).status_code == 401


def test_admin_routes_refuse_account_tokens(accounts):
    env = accounts
    admin_only = [(m, p) for m, p in v1_routes() if (m, p) not in ACCOUNT_READS]
    assert ("POST", "/v1/accounts/{account}/topups") in admin_only and ("GET", "/v1/ledger/check") in admin_only
    for method, path in admin_only:
        response = env.call(method, concrete(path), "alice")         # her own account, where there is one
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == {"detail": "an admin token is required"}


@pytest.mark.parametrize("path", ACCOUNT_PATHS)
def test_another_account_is_403_whether_or_not_it_exists(accounts, path):
    env = accounts
    bob, ghost = env.get(path.format(a=BOB), "alice"), env.get(path.format(a=GHOST), "alice")
    assert (bob.status_code, bob.json()) == (ghost.status_code, ghost.json()) == (403, FORBIDDEN)
    assert env.get(path.format(a=ALICE), "alice").status_code == 200
    assert env.get(path.format(a=BOB), "bob").status_code == 200


@pytest.mark.parametrize("path", ACCOUNT_PATHS)
def test_admin_asking_for_a_missing_account_is_404(accounts, path):
    env = accounts
    missing = env.get(path.format(a=GHOST))
    assert (missing.status_code, missing.json()) == (404, {"detail": f"account {GHOST} does not exist"})
    assert env.get(path.format(a=BOB)).status_code == 200


def test_account_filter_on_cdrs_and_stats(cdr_api):
    env = cdr_api
    for path in ("/v1/cdrs", "/v1/stats"):
        for other in ("bob@b.test", GHOST):
            response = env.get(path, "alice", account=other)
            assert (response.status_code, response.json()) == (403, FORBIDDEN), (path, other)
        assert env.get(path, "alice", account=ALICE).status_code == 200
    # for an admin, account= is a filter: a missing account matches nothing
    assert env.get("/v1/cdrs", account=GHOST).json()["items"] == []


def test_another_accounts_cdr_is_404_like_an_unknown_one(cdr_api):
    env = cdr_api
    bobs = env.get(f"/v1/cdrs/{env.calls['c3'][0].cdr_id}", "alice")
    unknown = env.get(f"/v1/cdrs/{uuid.uuid4()}", "alice")
    assert (bobs.status_code, bobs.json()) == (unknown.status_code, unknown.json()) == (404, {"detail": "no such CDR"})
    assert env.get(f"/v1/cdrs/{uuid.uuid4()}").status_code == 404                  # admin, unknown id


def test_revocation_takes_effect_on_the_next_request(cdr_api):
    client = cdr_api.client
    store = open_store(cdr_api.data)        # another process (the CLI) would do the same
    try:
        info, token = store.create("account", "carol@c.test")
        assert {i["account"] for i in client.get("/v1/cdrs", headers=auth(token)).json()["items"]} == \
            {"carol@c.test"}
        store.revoke(info.id)
        assert client.get("/v1/cdrs", headers=auth(token)).status_code == 401
    finally:
        store.close()
