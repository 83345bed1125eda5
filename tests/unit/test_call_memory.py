"""A finished call is freed by reference counting alone.

The worker never runs full garbage collections (proxy/runtime/worker.py
``tune_gc``): a per-call reference cycle that nobody breaks survives forever
in the oldest generation.  Under valid traffic that was ~4 KB per INVITE
(RSS 54 → 226 MB after 30,000 requests, bench/hostile_rss.py --malformed 0):
the routing script's RequestContext and its ProxyCall held each other
(``ctx.call`` and ``call.on_final = ctx._settled``).  These tests run with the
collector off, so only reference counting can free the call."""
from __future__ import annotations

import gc
import sys

import pytest

from tests.harness.corefake import ALICE, BOB, BYE_FROM_BOB, CoreRig, invite, register, response_to

pytestmark = pytest.mark.clock

ACK_486 = """ACK sip:bob@example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1;rport
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: call-1
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

"""

# every transaction timer (B, D, H, I, J, K, L, M, C) has run out well before this
ALL_TIMERS_S = 400


@pytest.fixture
def rig(tmp_path):
    rig = CoreRig(tmp_path, auth=False)
    rig.store.add_domain("example.test")
    rig.store.add_user("alice", "example.test", "a-secret")
    rig.store.add_user("bob", "example.test", "b-secret")
    rig.reload()
    register(rig)
    return rig


@pytest.fixture
def no_cycle_collector():
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


def unreferenced(obj) -> bool:
    """Nothing but the test's own variable holds ``obj``: dropping that frees
    it by reference counting (getrefcount counts its argument too).  Not a
    weak reference: the compiled ProxyCall (proxy/native.py) has none."""
    return sys.getrefcount(obj) == 3     # the variable, the argument, getrefcount's own


def test_busy_call_is_freed_without_the_cycle_collector(rig, no_cycle_collector):
    fwd = rig.receive(invite(), ALICE)[1][0]
    call = rig.core.calls["call-1"]
    rig.receive(response_to(fwd, 486, "Busy Here"), BOB)
    rig.receive(ACK_486, ALICE)
    rig.effects.advance(ALL_TIMERS_S)
    rig.effects.take()
    assert not rig.core.calls and not rig.core.server_txs and not rig.core.client_txs
    assert unreferenced(call), gc.get_referrers(call)


def test_unanswered_call_is_freed_without_the_cycle_collector(rig, no_cycle_collector):
    rig.receive(invite(), ALICE)            # the callee never answers: Timer B, 408
    call = rig.core.calls["call-1"]
    rig.effects.advance(ALL_TIMERS_S)
    rig.effects.take()
    assert not rig.core.calls and not rig.core.server_txs and not rig.core.client_txs
    assert unreferenced(call), gc.get_referrers(call)


def test_answered_call_is_freed_without_the_cycle_collector(rig, no_cycle_collector):
    fwd = rig.receive(invite(), ALICE)[1][0]
    call = rig.core.calls["call-1"]
    rig.receive(response_to(fwd, 200, "OK"), BOB)
    rig.receive(ACK_486.replace("z9hG4bKinv1", "z9hG4bKack1").replace(
        "ACK sip:bob@example.test", "ACK sip:bob@192.0.2.20:5062").replace(
        "Max-Forwards", "Route: <sip:10.0.0.1:5060;lr>\nMax-Forwards"), ALICE)
    bye = rig.receive(BYE_FROM_BOB, BOB)[0][0]
    rig.receive(response_to(bye, 200, "OK", to_tag=None), ALICE)
    rig.effects.advance(ALL_TIMERS_S)
    rig.effects.take()
    assert not rig.core.calls and not rig.core.server_txs and not rig.core.client_txs
    assert not rig.core.dialogs.dialogs
    assert unreferenced(call), gc.get_referrers(call)
