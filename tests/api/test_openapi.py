"""/docs and /openapi.json: every route is there, with its parameters, bodies and response models."""
from __future__ import annotations

import pytest

from tests.harness.api import v1_routes

pytestmark = pytest.mark.integration

PUBLIC = {("post", "/v1/session")}     # the panel's login: the one /v1 route without a bearer token
FILES = {"/v1/accounts/{account}/reports/{report}", "/v1/reports/{report}", "/v1/rate-plans/{plan}/export",
         "/v1/rerate/{run_id}/export"}


def test_openapi_docs(cdr_api):
    client = cdr_api.client
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/cdrs", "/v1/cdrs/{cdr_id}", "/v1/stats"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_every_route_is_documented_with_its_models(cdr_api):
    spec = cdr_api.client.get("/openapi.json").json()
    routes = [(method.lower(), path) for method, path in v1_routes()]
    assert {(m, p) for p, ops in spec["paths"].items() for m in ops} == set(routes) | PUBLIC
    login = spec["paths"]["/v1/session"]["post"]
    assert "security" not in login and {"401", "429"} <= set(login["responses"])
    assert login["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/SessionOut")
    for method, path in routes:
        op = spec["paths"][path][method]
        assert op["summary"] and op["tags"], (method, path)
        assert op.get("security") == [{"HTTPBearer": []}], (method, path)
        assert {"401", "403", "503"} <= set(op["responses"]), (method, path)
        ok = op["responses"][min(op["responses"])]
        if ok is op["responses"].get("204"):
            continue
        content = ok.get("content", {})
        if path in FILES:
            assert set(content) - {"application/json"}, (method, path)
        else:
            assert content["application/json"]["schema"].get("$ref"), (method, path, ok)
    schemas = spec["components"]["schemas"]
    assert schemas["Balance"]["properties"]["available"]["type"] == "string"        # money as text
    assert schemas["TopupIn"]["properties"]["amount"]["type"] == "string"
