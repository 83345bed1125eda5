"""Fixtures of the API tests (tests/api mirrors api/routes: one module per resource,
plus the rules every route shares: auth, the other-account rule, parameters, /docs)."""
from __future__ import annotations

import uuid

import pytest

from tests.harness.api import open_api
from tests.harness.clickhouse import sample_calls


@pytest.fixture(scope="package")
def chdb_path(tmp_path_factory):
    """One chdb path for the package (chdb: one path per process); a database per fixture."""
    return tmp_path_factory.mktemp("api-chdb") / "clickhouse"


@pytest.fixture(scope="package")
def cdr_api(tmp_path_factory, chdb_path):
    """The API over the sample calls (tests.harness.clickhouse), no billing stores:
    read-only, so one for the package."""
    with open_api(tmp_path_factory.mktemp("cdr-api"), chdb_path, database="cdr_api", billing=False) as env:
        env.calls = sample_calls()
        env.state.cdr_store.insert_legs([leg for legs in env.calls.values() for leg in legs])
        yield env


@pytest.fixture(scope="module")
def billing_api(tmp_path_factory, chdb_path):
    """The whole API, billing stores included, fresh for each module (tests change it)."""
    with open_api(tmp_path_factory.mktemp("billing-api"), chdb_path,
                  database=f"billing_{uuid.uuid4().hex[:8]}", billing=True) as env:
        yield env
