"""``/metrics``: loopback without a token, elsewhere an admin token; ``/v1/metrics`` rows."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def test_scrape_needs_loopback_or_an_admin_token(cdr_api):
    # TestClient's peer is "testclient": not loopback
    assert cdr_api.get("/metrics", who=None).status_code == 401
    assert cdr_api.get("/metrics", who="alice").status_code == 403
    assert cdr_api.get("/metrics", who="revoked").status_code == 403
    reply = cdr_api.get("/metrics", who="admin")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    list(text_string_to_metric_families(reply.text))       # parses
    loopback = TestClient(cdr_api.client.app, client=("127.0.0.1", 50000))
    assert loopback.get("/metrics").status_code == 200


def test_rows_are_admin_only_and_grouped(cdr_api):
    assert cdr_api.get("/v1/metrics", who="alice").status_code == 403
    reply = cdr_api.get("/v1/metrics", group="core")
    assert reply.status_code == 200, reply.text
    assert all(row["name"].startswith("core:") for row in reply.json()["rows"])
    assert cdr_api.get("/v1/metrics", group="Core;").status_code == 422
