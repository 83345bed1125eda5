"""``/v1/stats`` over the sample calls: ASR, NER, ACD, PDD; per gateway the unit is the leg."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_stats_through_the_api(cdr_api):
    env = cdr_api
    body = env.get("/v1/stats", period="day", group_by="gateway", to="2026-11-28T00:00:00Z").json()
    assert body["unit"] == "leg"
    rows = {row["group"]: row for row in body["rows"]}
    assert (rows["gw-de"]["asr"], rows["gw-de"]["ner"], rows["gw-de"]["acd_s"]) == (0.6667, 1.0, 45.0)
    assert rows["gw-fr"]["pdd_ms"] == {"count": 2, "mean": 175.0, "p50": 300, "p95": 300}
    alice = env.get("/v1/stats", "alice", period="month").json()
    assert alice["unit"] == "call"
    # alice: c1 answered, c2 busy, c7 failed, c8 rejected for credit (c9, a 302, is not an attempt)
    assert [(r["attempts"], r["answered"], r["effective"], r["asr"]) for r in alice["rows"]] == [(4, 1, 2, 0.25)]
    prefix = env.get("/v1/stats", period="month", group_by="prefix", prefix_len="2").json()
    assert {row["group"]: row["attempts"] for row in prefix["rows"]} == {"49": 6, "33": 2}
