"""``/v1/fraud``: the alerts the workers recorded (admin only), filters and limit."""
from __future__ import annotations

import pytest

from proxy.provisioning.store import ProvisioningStore

pytestmark = pytest.mark.integration


def test_fraud_alerts_listed_newest_first(billing_api):
    env = billing_api
    store = ProvisioningStore(env.state.provisioning_url)
    store.create_schema()
    base = dict(parameter="cpm", value=3, threshold=3, number="0044", prefix="00", profile="default",
                rule_id=1, action="none")
    store.add_fraud_alerts([{**base, "at": 1_900_000_000.0, "severity": "warning", "user": "a@x",
                             "call_id": "c1"},
                            {**base, "at": 1_900_000_060.0, "severity": "critical", "user": "a@x",
                             "call_id": "c2", "action": "refused"},
                            {**base, "at": 1_900_000_120.0, "severity": "warning", "user": "b@x",
                             "call_id": "c3"}])
    store.close()
    items = env.get("/v1/fraud").json()["items"]
    assert [i["call_id"] for i in items] == ["c3", "c2", "c1"]
    critical = env.get("/v1/fraud", severity="critical").json()["items"]
    assert [(i["call_id"], i["action"]) for i in critical] == [("c2", "refused")]
    assert [i["call_id"] for i in env.get("/v1/fraud", user="a@x", limit="1").json()["items"]] == ["c2"]
    assert env.get("/v1/fraud", "alice").status_code == 403
