"""Parameters, the same way on every route (api/params.py): a bad value is a 422
whose ``detail[].loc`` names the parameter -- wrong type or range, an inverted
time range, a malformed month, ``limit`` outside 1..1000, an unknown name."""
from __future__ import annotations

import pytest

from tests.harness.api import ALICE, loc_fields

pytestmark = pytest.mark.integration

# a concrete path for each route template (an account that exists, a report)
CONCRETE = {"/v1/cdrs": "/v1/cdrs", "/v1/stats": "/v1/stats", "/v1/quality": "/v1/quality", "/v1/fraud": "/v1/fraud", "/v1/ledger/check": "/v1/ledger/check",
            "/v1/accounts/{account}/ledger": f"/v1/accounts/{ALICE}/ledger",
            "/v1/accounts/{account}/reports/{report}": f"/v1/accounts/{ALICE}/reports/statement",
            "/v1/reports/{report}": "/v1/reports/gateways"}
RANGE_ROUTES = sorted(CONCRETE.values())
LIMIT_ROUTES = [CONCRETE[p] for p in ("/v1/cdrs", "/v1/fraud", "/v1/accounts/{account}/ledger")]
# the provisioning lists page with limit and offset (api/params.py Paging; tests/api/test_provisioning.py)
LIMIT_ROUTES += [f"/v1/{r}" for r in ("users", "domains", "aliases", "gateways", "carriers", "routes", "dialplans",
                                      "dialplans/0", "blacklists", "trusted", "groups/members",
                                      "groups/requirements", "forwarding", "media-servers", "tokens")]
PAGED = {"/v1/dialplans/{dpid}": "/v1/dialplans/0"}          # concrete paths of the paged lists with a parameter
MONTH_ROUTES = [CONCRETE[p] for p in ("/v1/accounts/{account}/reports/{report}", "/v1/reports/{report}")]


@pytest.fixture(scope="module")
def env(billing_api):
    assert billing_api.call("POST", "/v1/accounts", json={"id": ALICE}).status_code == 201
    return billing_api


def routes_with(env, name: str) -> list[str]:
    """Concrete paths of the GET routes declaring the query parameter ``name``."""
    paths = env.client.app.openapi()["paths"]
    return sorted(CONCRETE.get(path, PAGED.get(path, path)) for path, ops in paths.items()
                  if any(p["name"] == name and p["in"] == "query" for p in ops.get("get", {}).get("parameters", [])))


def test_the_lists_below_are_every_such_route(env):
    assert routes_with(env, "from") == routes_with(env, "to") == RANGE_ROUTES
    assert routes_with(env, "limit") == sorted(LIMIT_ROUTES)
    assert routes_with(env, "month") == sorted(MONTH_ROUTES)


@pytest.mark.parametrize("path, params, field", [
    ("/v1/cdrs", {"limit": "0"}, "limit"),
    ("/v1/cdrs", {"limit": "1001"}, "limit"),
    ("/v1/cdrs", {"limit": "ten"}, "limit"),
    ("/v1/cdrs", {"from": "yesterday"}, "from"),
    ("/v1/cdrs", {"to": "2026-13-01T00:00:00Z"}, "to"),
    ("/v1/cdrs", {"from": "2026-11-28T00:00:00Z", "to": "2026-11-27T00:00:00Z"}, "to"),
    ("/v1/cdrs", {"from": "99999999999999999"}, "from"),
    ("/v1/cdrs", {"disposition": "hung"}, "disposition"),
    ("/v1/cdrs", {"caller_ip": "300.1.2.3"}, "caller_ip"),
    ("/v1/cdrs", {"callee": "49' OR 1=1"}, "callee"),
    ("/v1/cdrs", {"min_duration": "-1"}, "min_duration"),
    ("/v1/cdrs", {"cursor": "not-a-cursor"}, "cursor"),
    ("/v1/cdrs", {"acount": "alice@a.test"}, "acount"),
    ("/v1/cdrs/not-a-uuid", {}, "cdr_id"),
    ("/v1/stats", {"period": "week"}, "period"),
    ("/v1/stats", {"group_by": "caller"}, "group_by"),
    ("/v1/stats", {"prefix_len": "0"}, "prefix_len"),
    ("/v1/stats", {"disposition": "answered"}, "disposition"),
])
def test_bad_parameters_are_422_naming_the_field(cdr_api, path, params, field):
    response = cdr_api.get(path, **params)
    assert field in loc_fields(response), response.json()


@pytest.mark.parametrize("path", RANGE_ROUTES)
@pytest.mark.parametrize("params", [
    {"from": "2026-11-28T00:00:00Z", "to": "2026-11-27T00:00:00Z"},       # inverted
    {"from": "2026-12", "to": "2026-11"},                                 # inverted months
    {"from": "1795824000000", "to": "1795824000000"},                     # empty
])
def test_an_inverted_range_is_422_on_every_range_route(env, path, params):
    response = env.get(path, **params)
    assert loc_fields(response) == {"to"}
    assert response.json()["detail"][0]["msg"] == "must be after 'from'"


@pytest.mark.parametrize("path", RANGE_ROUTES)
@pytest.mark.parametrize("params, field", [({"from": "2026-13"}, "from"), ({"to": "2026-11-31"}, "to"),
                                           ({"from": "last week"}, "from")])
def test_a_malformed_time_is_422_on_every_range_route(env, path, params, field):
    assert loc_fields(env.get(path, **params)) == {field}


@pytest.mark.parametrize("path", LIMIT_ROUTES)
def test_limit_is_1_to_1000_on_every_route(env, path):
    for bad in ("0", "1001", "-1", "many"):
        assert loc_fields(env.get(path, limit=bad)) == {"limit"}
    for good in ("1", "1000"):
        assert env.get(path, limit=good).status_code == 200


@pytest.mark.parametrize("path", MONTH_ROUTES)
def test_months(env, path):
    for bad in ("2026-13", "2026-00", "2026-1", "26-11", "november"):
        response = env.get(path, month=bad)
        assert loc_fields(response) == {"month"}, bad
    assert loc_fields(env.get(path, month="2026-11", to="2026-12")) == {"month"}     # one or the other
    assert env.get(path, month="2026-11").status_code == 200


@pytest.mark.parametrize("path, params, field", [
    (f"/v1/accounts/{ALICE}/ledger", {"form": "2026-11"}, "form"),
    (f"/v1/accounts/{ALICE}/reports/statement", {"monht": "2026-11"}, "monht"),
    ("/v1/ledger/check", {"acount": ALICE}, "acount"),
    (f"/v1/accounts/{ALICE}/balance", {"verbose": "1"}, "verbose"),
    (f"/v1/accounts/{ALICE}/ledger", {"kind": "bonus"}, "kind"),
    (f"/v1/accounts/{ALICE}/ledger", {"cursor": "abc"}, "cursor"),
    (f"/v1/accounts/{ALICE}/reports/statement", {"format": "pdf"}, "format"),
])
def test_billing_parameters_are_422_naming_the_field(env, path, params, field):
    assert loc_fields(env.get(path, **params)) == {field}
