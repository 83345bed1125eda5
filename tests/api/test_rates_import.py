"""``POST /v1/rate-plans/import`` (the panel's CSV import): a good file answers
how many rates it added and which plans it created; a bad one imports nothing
and lists every bad line."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

HEADER = "plan,prefix,name,price_per_min,currency\n"


def test_import_counts_rates_or_lists_every_bad_line(billing_api):
    env = billing_api
    bad = env.call("POST", "/v1/rate-plans/import", content=HEADER + "imp,49,DE,abc,EUR\nimp,33,FR,0.01,EUR\n"
                   "imp,x1,,0.02,EUR\n", headers={"Content-Type": "text/csv"})
    assert bad.status_code == 422 and [e.split(":")[0] for e in bad.json()["errors"]] == ["line 2", "line 4"]
    assert "imp" not in {p["name"] for p in env.get("/v1/rate-plans").json()["items"]}
    good = env.call("POST", "/v1/rate-plans/import", content=HEADER + "imp,49,DE,0.01,EUR\nimp2,33,FR,0.02,EUR\n"
                    "imp2,34,ES,0.02,EUR\n", headers={"Content-Type": "text/csv"})
    assert (good.status_code, good.json()) == (200, {"added": 3, "created": ["imp", "imp2"]})
