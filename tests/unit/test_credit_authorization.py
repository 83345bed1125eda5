"""The authorization call at INVITE: 402 before any phone rings, or a capped dialog."""
from __future__ import annotations

import pytest

from proxy.contract.credit import AuthorizeResponse
from proxy.core.ports import Target
from proxy.infra.config import AuthorizationSettings
from tests.harness.corefake import ALICE, BOB, CoreRig, invite, register, response_to

# Authorization requests carry the project clock's time: also run a year ahead.
pytestmark = pytest.mark.clock


@pytest.fixture
def rig(tmp_path):
    rig = CoreRig(tmp_path, auth=True, authorization=AuthorizationSettings(enabled=True),
                  trusted_sources=("192.0.2.20/32",))     # bob's phone registers unchallenged
    rig.store.add_domain("example.test")
    rig.store.add_user("alice", "example.test", "a-secret")
    rig.store.add_user("bob", "example.test", "b-secret")
    rig.reload()
    register(rig)
    return rig


def statuses(out):
    return [m.status for m, _ in out if m.status]


def test_no_credit_is_402_before_anything_rings(rig):
    rig.effects.credit = lambda req: AuthorizeResponse(id=req.id, allowed=False, code=402,
                                                       reason="Payment Required")
    out = rig.authenticated(invite(), ALICE, "alice", "a-secret")
    assert 402 in statuses(out)
    assert not [m for m, _ in out if m.method == "INVITE"]          # nothing forwarded
    (request,) = rig.effects.authorizations
    assert request.account == "alice@example.test" and request.destination == "bob"
    failed = [e for e in rig.effects.events if e.__class__.__name__ == "CallFailed"]
    assert [(f.code, f.by_proxy) for f in failed] == [(402, True)]


def test_allowed_call_gets_the_maximum_duration(rig):
    rig.effects.credit = lambda req: AuthorizeResponse(id=req.id, allowed=True, max_duration_s=42)
    out = rig.authenticated(invite(), ALICE, "alice", "a-secret")
    (fwd,) = [m for m, _ in out if m.method == "INVITE"]
    rig.receive(response_to(fwd, 200, "OK"), BOB)
    answered = [e for e in rig.effects.events if e.__class__.__name__ == "CallAnswered"]
    assert answered[0].max_duration_s == 42
    rig.effects.advance(43)
    byes = {t.host for m, t in rig.effects.take() if m.method == "BYE"}
    assert byes == {"192.0.2.10", "192.0.2.20"}


def test_no_answer_from_credit_control_fails_closed_by_default(rig):
    rig.effects.credit = lambda req: None
    out = rig.authenticated(invite(), ALICE, "alice", "a-secret")
    assert 503 in statuses(out)


def test_no_answer_can_fail_open(tmp_path):
    rig = CoreRig(tmp_path, auth=True,
                  authorization=AuthorizationSettings(enabled=True, on_error="allow"),
                  trusted_sources=("192.0.2.20/32",))
    rig.store.add_domain("example.test")
    rig.store.add_user("alice", "example.test", "a-secret")
    rig.store.add_user("bob", "example.test", "b-secret")
    rig.reload()
    register(rig)
    out = rig.authenticated(invite(), ALICE, "alice", "a-secret")
    assert [m for m, _ in out if m.method == "INVITE"]


def test_trusted_gateway_calls_are_not_sent_to_credit_control(rig):
    gateway = Target("udp", "192.0.2.20", 5062)
    rig.receive(invite().replace("192.0.2.10:5060;branch", "192.0.2.20:5062;branch"), gateway)
    assert rig.effects.authorizations == []
