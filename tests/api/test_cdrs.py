"""``/v1/cdrs`` over the sample calls: account isolation, filters, cursor pagination."""
from __future__ import annotations

import pytest

from tests.harness.clickhouse import sample_t0

pytestmark = pytest.mark.integration


def cdr_ids(env, names):
    return {env.calls[name][0].cdr_id for name in names}


def test_account_token_sees_only_its_account(cdr_api):
    env = cdr_api
    alice = env.get("/v1/cdrs", "alice")
    assert alice.status_code == 200
    assert {item["cdr_id"] for item in alice.json()["items"]} == cdr_ids(env, ["c1", "c2", "c7", "c8", "c9"])
    assert {item["account"] for item in alice.json()["items"]} == {"alice@a.test"}
    same = env.get("/v1/cdrs", "alice", account="alice@a.test")
    assert same.json()["items"] == alice.json()["items"]
    everyone = env.get("/v1/cdrs", "admin")
    assert len(everyone.json()["items"]) == 9
    bob_call = env.calls["c3"][0].cdr_id
    assert env.get(f"/v1/cdrs/{bob_call}", "bob").status_code == 200
    hidden = env.get(f"/v1/cdrs/{bob_call}", "alice")
    assert hidden.status_code == 404 and hidden.json() == {"detail": "no such CDR"}


def test_filters_through_the_api(cdr_api):
    env = cdr_api
    t0 = sample_t0()

    def names(**params):
        response = env.get("/v1/cdrs", **params)
        assert response.status_code == 200, response.text
        return {item["cdr_id"] for item in response.json()["items"]}

    assert names(callee="+4989", disposition=["failed", "rejected_credit"]) == cdr_ids(env, ["c7", "c8", "c9"])
    assert names(**{"from": "2026-11-27T11:00:00Z", "to": str(t0 + 86_400_000)}) == cdr_ids(env, ["c5", "c6"])
    assert names(**{"from": "2026-11-27T12:00:00+02:00", "to": "2026-11-27T10:03:00"}) == \
        cdr_ids(env, ["c1", "c2", "c3"])
    assert names(gateway="gw-fr", min_duration="30") == cdr_ids(env, ["c4"])
    assert names(caller="+33", caller_ip="198.51.100.7") == cdr_ids(env, ["c3", "c4"])
    assert names(account="x' OR 1=1 --") == set()
    detail = env.get(f"/v1/cdrs/{env.calls['c4'][0].cdr_id.upper()}").json()
    assert [leg["gateway"] for leg in detail["legs_detail"]] == ["gw-fr", "gw-de"]
    assert detail["setup_at"] == "2026-11-27T10:03:00.000Z" and detail["disposition"] == "answered"


def test_a_day_or_month_as_to_includes_all_of_it(cdr_api):
    env = cdr_api
    day = {i["cdr_id"] for i in env.get("/v1/cdrs", **{"from": "2026-11-27", "to": "2026-11-27"}).json()["items"]}
    month = {i["cdr_id"] for i in env.get("/v1/cdrs", **{"from": "2026-11", "to": "2026-11"}).json()["items"]}
    every = {i["cdr_id"] for i in env.get("/v1/cdrs").json()["items"]}
    assert day and day <= month == every


def test_cursor_walk(cdr_api):
    env = cdr_api
    seen, cursor = [], None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = env.get("/v1/cdrs", **params).json()
        seen += [(item["setup_ms"], item["cdr_id"]) for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 9 == len(set(seen)) and seen == sorted(seen, reverse=True)
    # a cursor carries no authority: alice's walk with it stays alice's
    first = env.get("/v1/cdrs", "admin", limit="1").json()
    rest = env.get("/v1/cdrs", "alice", cursor=first["next_cursor"]).json()["items"]
    assert {item["account"] for item in rest} == {"alice@a.test"}


def test_media_columns_in_list_and_detail(cdr_api):
    env = cdr_api
    relayed = env.calls["c4"][1]                      # the answered leg of a failed-over call
    expected = {"caller_rtp_packets": 1500, "caller_rtp_bytes": 258_000, "caller_rtp_errors": 0,
                "caller_rtp_lost": 4, "caller_rtp_jitter_ms": 2, "caller_rtp_mos_x10": 42,
                "callee_rtp_packets": 1490, "callee_rtp_bytes": 256_280, "callee_rtp_errors": 1,
                "callee_rtp_lost": None, "callee_rtp_jitter_ms": None, "callee_rtp_mos_x10": None,
                "media_relay": "udp:127.0.0.1:2223", "last_media_ms": relayed.last_media_ms}
    detail = env.get(f"/v1/cdrs/{relayed.cdr_id}").json()
    assert {name: detail["legs_detail"][1][name] for name in expected} == expected
    assert {name: detail[name] for name in expected} == expected              # the call: its answered leg
    not_relayed = detail["legs_detail"][0]
    assert (not_relayed["caller_rtp_packets"], not_relayed["caller_rtp_lost"], not_relayed["media_relay"]) == \
        (0, None, "")
    items = env.get("/v1/cdrs", "bob").json()["items"]
    listed = {item["cdr_id"]: item for item in items}
    assert {name: listed[relayed.cdr_id][name] for name in expected} == expected
    assert listed[env.calls["c3"][0].cdr_id]["media_relay"] == ""
