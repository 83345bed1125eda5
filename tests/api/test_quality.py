"""``/v1/quality`` over the sample calls (tests/harness/clickhouse.py): the figures of
docs/quality.md per bucket and gateway / prefix / account, the probe state, and the
422s naming the parameter.  Numbers worked out in tests/integration/test_cdr_store.py."""
from __future__ import annotations

import json

import pytest

from api.quality import gateway_states
from proxy.routing.drouting import Gateway
from proxy.routing.store import RoutingStore

pytestmark = pytest.mark.integration


def test_quality_per_gateway_5min_buckets_and_seer(cdr_api):
    body = cdr_api.get("/v1/quality", bucket="5min", group_by="gateway", to="2026-11-28T00:00:00Z").json()
    assert body["unit"] == "leg" and body["bucket"] == "5min"
    # 10:00-10:05: c1 answered, c2 busy at gw-de; c3 480 (no answer), c4 leg 0 503 at gw-fr;
    # c4 leg 1 answered at gw-de
    rows = {(r["period"], r["group"]): r for r in body["rows"]}
    de, fr = rows["2026-11-27T10:00:00.000Z", "gw-de"], rows["2026-11-27T10:00:00.000Z", "gw-fr"]
    assert (de["attempts"], de["asr"], de["ner"], de["seer"], de["acd_s"]) == (3, 0.6667, 1.0, 1.0, 45.0)
    # gw-fr: NER counts c3's ring-no-answer as effective; SEER (RFC 6076) counts its 480 too
    assert (fr["attempts"], fr["asr"], fr["ner"], fr["seer"]) == (2, 0.0, 0.5, 0.5)
    assert de["probe"] == "unknown"                      # no provisioning database in this API
    # 11:00-11:05: carol's two cancelled calls (10 s apart), not to a gateway
    assert [(p, r["attempts"]) for (p, g), r in rows.items() if g == ""] == [("2026-11-27T11:00:00.000Z", 2)]


def test_quality_per_account_and_day(cdr_api):
    body = cdr_api.get("/v1/quality", bucket="day", group_by="account").json()
    day1 = {r["group"]: r for r in body["rows"] if r["period"] == "2026-11-27T00:00:00.000Z"}
    # carol: c5 cancelled while ringing (NER: effective; SEER: not), c6 cancelled before ringing
    assert (day1["carol@c.test"]["ner"], day1["carol@c.test"]["seer"]) == (0.5, 0.0)
    assert (day1["bob@b.test"]["asr"], day1["bob@b.test"]["seer"]) == (0.5, 1.0)
    alice = cdr_api.get("/v1/quality", "alice", bucket="day", group_by="account").json()
    assert {r["group"] for r in alice["rows"]} == {"alice@a.test"}     # an account sees its own


def test_quality_per_prefix(cdr_api):
    body = cdr_api.get("/v1/quality", bucket="day", group_by="prefix", prefix_len="3").json()
    assert {r["group"] for r in body["rows"]} == {"498", "493", "331"}
    assert body["prefix_len"] == 3


@pytest.mark.parametrize("params, name", [({"bucket": "week"}, "bucket"), ({"group_by": "carrier"}, "group_by"),
                                          ({"prefix_len": "0"}, "prefix_len"), ({"from": "yesterday"}, "from"),
                                          ({"bukcet": "day"}, "bukcet")])
def test_quality_refusals_name_the_parameter(cdr_api, params, name):
    response = cdr_api.get("/v1/quality", **params)
    assert response.status_code == 422
    assert name in [detail["loc"][-1] for detail in response.json()["detail"]]


def test_gateway_probe_states(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    store = RoutingStore(url)
    store.create_schema()
    store.add_gateway(Gateway("gw-a", "198.51.100.1:5060", probe="always"))
    store.add_gateway(Gateway("gw-b", "198.51.100.2:5060", probe="when-down"))
    store.add_gateway(Gateway("gw-c", "198.51.100.3:5060"))
    store.close()
    run = tmp_path / "run"
    run.mkdir()
    assert gateway_states(url, run) == {"gw-a": "unknown", "gw-b": "unknown", "gw-c": "not_probed"}
    (run / "worker-0.loaded").write_text(json.dumps({"worker": 0, "gateways_down": []}))
    (run / "worker-1.loaded").write_text(json.dumps({"worker": 1, "gateways_down": ["gw-b"]}))
    assert gateway_states(url, run) == {"gw-a": "up", "gw-b": "down", "gw-c": "not_probed"}


def test_cli_table_renders_what_the_api_returns(cdr_api):
    from rich.console import Console

    from api.quality_cli import render
    body = cdr_api.get("/v1/quality", bucket="day", group_by="gateway").json()
    console = Console(width=200, record=True)
    console.print(render(body))
    text = console.export_text()
    assert "gw-de" in text and "66.7%" in text and "probe" in text
