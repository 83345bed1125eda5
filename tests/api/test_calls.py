"""``/v1/calls`` (api/routes/calls.py) over worker files written here: who sees
which call, and the refusals of a hang-up that reach no broker (the hang-up
itself, end to end: tests/e2e/test_control.py)."""
from __future__ import annotations

import json
import os

import pytest

from proxy.infra import clock
from proxy.infra.config import RUN_DIR
from proxy.runtime.livecalls import calls_path
from tests.harness.api import ALICE, BOB

pytestmark = pytest.mark.integration


def _call(call_id: str, account: str, answered: bool) -> dict:
    now = clock.now_ms()
    return {"call_id": call_id, "state": "confirmed" if answered else "early", "caller": f"sip:{account}",
            "callee": "sip:123@x", "account": account, "gateway": "gw1" if answered else "",
            "started_ms": now - 4000, "answered_ms": now - 2000 if answered else 0,
            "max_duration_s": 3600, "worker": 0}


@pytest.fixture
def live(cdr_api):
    path = calls_path(cdr_api.data / RUN_DIR, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    calls = [_call("alice-1@h", ALICE, True), _call("bob-1@h", BOB, False)]
    path.write_text(json.dumps({"worker": 0, "pid": os.getpid(), "written_ms": 0, "total": 2,
                                "truncated": False, "calls": calls}))
    yield cdr_api
    path.unlink()


def test_admin_lists_every_call_and_an_account_its_own(live):
    page = live.get("/v1/calls").json()
    assert [c["call_id"] for c in page["items"]] == ["alice-1@h", "bob-1@h"] and page["workers"] == 1
    alice = live.get("/v1/calls", "alice").json()["items"]
    assert [c["call_id"] for c in alice] == ["alice-1@h"]
    assert alice[0]["state"] == "confirmed" and alice[0]["gateway"] == "gw1" and alice[0]["duration_ms"] >= 2000
    assert live.get("/v1/calls", "alice", account=BOB).status_code == 403
    assert [c["call_id"] for c in live.get("/v1/calls", account=BOB).json()["items"]] == ["bob-1@h"]


def test_another_accounts_call_is_404_like_an_unknown_one(live):
    assert live.get("/v1/calls/alice-1@h", "alice").json()["account"] == ALICE
    for call_id in ("bob-1@h", "nobody@h"):
        response = live.get(f"/v1/calls/{call_id}", "alice")
        assert response.status_code == 404 and response.json() == {"detail": "no such live call"}


def test_hangup_is_admin_only_and_refuses_unknown_or_malformed_calls(live):
    assert live.call("DELETE", "/v1/calls/alice-1@h", "alice").status_code == 403
    assert live.call("DELETE", "/v1/calls/nobody@h").status_code == 404
    assert live.call("DELETE", "/v1/calls/has%20space").status_code == 422
    assert live.call("DELETE", "/v1/calls/" + "x" * 256).status_code == 422
    assert live.call("DELETE", "/v1/calls/alice-1@h", params={"reason": 'a"b'}).status_code == 422
    # a known call, but no broker: no `up` runs in this data dir and none is configured
    response = live.call("DELETE", "/v1/calls/alice-1@h")
    assert response.status_code == 503 and "sipledger up" in response.json()["detail"]
