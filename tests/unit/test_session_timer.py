"""Session timers at the proxy (RFC 4028, proxy/core/session_timer.py)."""
from __future__ import annotations

import pytest

from proxy.core.session_timer import SessionTimer
from proxy.infra.config import SessionTimerSettings
from tests.harness.corefake import ALICE, BOB, invite, register, response_to, subscriber_rig

pytestmark = pytest.mark.clock

SE = "Session-Expires: 300;refresher=uac\nSupported: timer\n"


def rig_with(tmp_path, **settings):
    rig = subscriber_rig(tmp_path, auth=False)
    timer = SessionTimer(rig.core, SessionTimerSettings(**settings))
    rig.core.session_timer = timer
    rig.core.dialogs.watchers.append(timer)
    register(rig)
    return rig


def call(rig, extra=SE, answer_extra="Session-Expires: 300;refresher=uac\nRequire: timer\n"):
    """Alice calls Bob with ``extra`` headers, Bob answers with ``answer_extra``: (INVITE forwarded, 2xx relayed)."""
    fwd = next(m for m, _ in rig.receive(invite(extra=extra), ALICE) if m.method == "INVITE")
    out = rig.receive(response_to(fwd, 200, "OK", extra=answer_extra), BOB)
    ok = next(m for m, t in out if m.status == 200 and t == ALICE)
    rig.effects.take()
    return fwd, ok


def byes(rig):
    """The proxy's own BYEs (one per party; UDP retransmissions left out)."""
    sent = {}
    for m, t in rig.effects.take():
        if m.method == "BYE" and m.get("reason"):
            sent.setdefault(m.top_via, (m, t))
    return list(sent.values())


def names(rig):
    return [type(e).__name__ for e in rig.effects.events]


def test_a_session_never_refreshed_is_ended_both_ways_with_an_event(tmp_path):
    rig = rig_with(tmp_path)
    call(rig)
    rig.effects.advance(299)
    assert byes(rig) == []                           # the refresher still has time
    rig.effects.advance(2)
    sent = byes(rig)
    assert {(t.host, t.port) for _, t in sent} == {("192.0.2.10", 5060), ("192.0.2.20", 5062)}
    assert all(m.get("reason") == 'SIP;cause=408;text="session timer expired"' for m, _ in sent)
    expired = rig.effects.events[-1]
    assert type(expired).__name__ == "SessionExpired"
    assert expired.session_expires_s == 300 and expired.call_id == "call-1" and expired.leg == 0
    (dialog,) = rig.core.dialogs.dialogs.values()
    assert dialog.end_reason == "session_expired"


def reinvite(by_alice: bool, cseq: int, extra: str = "") -> tuple[str, object]:
    if by_alice:
        return f"""INVITE sip:bob@192.0.2.20:5062 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKre{cseq};rport
Route: <sip:10.0.0.1:5060;lr>
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: call-1
CSeq: {cseq} INVITE
Contact: <sip:alice@192.0.2.10:5060>
{extra}Max-Forwards: 70
Content-Length: 0

""", ALICE
    return f"""UPDATE sip:alice@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKup{cseq};rport
Route: <sip:10.0.0.1:5060;lr>
From: <sip:bob@example.test>;tag=b1
To: "Alice" <sip:alice@example.test>;tag=a1
Call-ID: call-1
CSeq: {cseq} UPDATE
Contact: <sip:bob@192.0.2.20:5062>
{extra}Max-Forwards: 70
Content-Length: 0

""", BOB


@pytest.mark.parametrize("by_alice", [True, False], ids=["re-INVITE from the caller", "UPDATE from the callee"])
def test_a_refresh_in_either_direction_restarts_the_interval(tmp_path, by_alice):
    rig = rig_with(tmp_path)
    call(rig)
    rig.effects.advance(150)
    text, source = reinvite(by_alice, 5, "Session-Expires: 600;refresher=uac\n")
    rig.receive(text, source)
    rig.effects.take()
    rig.effects.advance(599)                         # 150 + 599 > 300: the old interval is gone
    assert byes(rig) == [] and "SessionExpired" not in names(rig)
    rig.effects.advance(2)
    assert len(byes(rig)) == 2 and names(rig)[-1] == "SessionExpired"


def test_a_session_expires_below_our_min_se_gets_422(tmp_path):
    rig = rig_with(tmp_path, min_se_seconds=600)
    out = rig.receive(invite(extra=SE), ALICE)
    (resp, target), = [(m, t) for m, t in out if m.status]
    assert (resp.status, resp.get("min-se"), target) == (422, "600", ALICE)
    assert not [m for m, _ in out if m.method == "INVITE"]


def test_a_min_se_below_ours_is_raised_on_the_way(tmp_path):
    rig = rig_with(tmp_path, min_se_seconds=120)
    fwd, _ = call(rig, extra=SE + "Min-SE: 90\n")
    assert fwd.get("min-se") == "120" and fwd.get("session-expires") == "300;refresher=uac"


def test_insert_policy_adds_session_expires_and_min_se_but_never_supported(tmp_path):
    rig = rig_with(tmp_path, insert=True, session_expires_seconds=1800, min_se_seconds=90)
    fwd, _ = call(rig, extra="", answer_extra="Session-Expires: 1800;refresher=uas\nRequire: timer\n")
    assert (fwd.get("session-expires"), fwd.get("min-se"), fwd.get("supported")) == ("1800", "90", None)
    (dialog,) = rig.core.dialogs.dialogs.values()
    assert (dialog.session.interval, dialog.session.refresher) == (1800, "uas")


def test_a_uas_without_timers_makes_the_supporting_caller_the_refresher(tmp_path):
    rig = rig_with(tmp_path)
    _, ok = call(rig, answer_extra="")
    assert ok.get("session-expires") == "300;refresher=uac" and ok.get("require") == "timer"
    rig.effects.advance(301)
    assert len(byes(rig)) == 2


def test_nobody_doing_timers_means_nothing_to_watch(tmp_path):
    rig = rig_with(tmp_path, insert=True)
    _, ok = call(rig, extra="", answer_extra="")      # inserted, but neither end supports it
    assert ok.get("session-expires") is None
    rig.effects.advance(4000)
    assert "SessionExpired" not in names(rig)


def test_disabled_honours_nothing(tmp_path):
    rig = rig_with(tmp_path, enabled=False, min_se_seconds=600)
    call(rig)                                        # no 422 either
    rig.effects.advance(4000)
    assert "SessionExpired" not in names(rig)


def test_a_bye_before_expiry_stops_the_timer(tmp_path):
    rig = rig_with(tmp_path)
    call(rig)
    rig.receive("""BYE sip:bob@192.0.2.20:5062 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye;rport
Route: <sip:10.0.0.1:5060;lr>
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: call-1
CSeq: 9 BYE
Max-Forwards: 70
Content-Length: 0

""", ALICE)
    rig.effects.take()
    rig.effects.advance(400)
    assert byes(rig) == [] and "SessionExpired" not in names(rig)


@pytest.mark.parametrize("by_alice", [True, False], ids=["re-INVITE", "UPDATE"])
def test_a_refresh_asking_less_than_our_min_se_gets_422_and_refreshes_nothing(tmp_path, by_alice):
    rig = rig_with(tmp_path, min_se_seconds=120)
    call(rig, extra="Session-Expires: 300;refresher=uac\nSupported: timer\n")
    rig.effects.advance(200)
    text, source = reinvite(by_alice, 5, "Session-Expires: 100\n")
    out = rig.receive(text, source)
    assert [(m.status, m.get("min-se")) for m, _ in out if m.status] == [(422, "120")]
    assert not [m for m, _ in out if m.method in ("INVITE", "UPDATE")]
    rig.effects.advance(101)                         # 301 s after the answer: expired all the same
    assert names(rig)[-1] == "SessionExpired"
