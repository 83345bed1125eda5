"""The call join (proxy/contract/callfold.py): every call shape, idempotence, order independence."""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cdr_pipeline import SHAPES, CallBuilder, call_events
from proxy.contract import events as ev
from proxy.contract.callfold import (
    CallState,
    apply,
    finish,
    fold,
    is_call_event,
    is_over,
    new_state,
    silence_deadline_ms,
    silence_end_ms,
)
from proxy.contract.cdr import CdrLeg, cdr_id_for

T0 = 1_767_225_600_000


def rows_of(events) -> list[CdrLeg] | None:
    return finish(fold(events), 0)


def call(call_id: str = "c1@test") -> CallBuilder:
    return CallBuilder(call_id, T0, from_tag="ft1", proxy="node-a")


def one(rows):
    assert rows is not None and len(rows) == 1
    return rows[0]


# --- call shapes ---------------------------------------------------------------------

def test_answered_caller_bye():
    c = call()
    c.at(0).invite()
    c.at(3).route(0)
    c.at(180).progress(0)
    c.at(3000).answer(0)
    c.at(3010).ack(0)
    assert finish(fold(c.events), 0) is None          # talking: not over
    c.at(63_500).bye("caller")
    row = one(rows_of(c.events))
    assert row.cdr_id == cdr_id_for("c1@test", "ft1")
    assert (row.leg, row.parent_leg, row.leg_cause, row.legs) == (0, -1, "initial", 1)
    assert (row.call_id, row.from_tag, row.to_tag) == ("c1@test", "ft1", "tt0")
    assert (row.account, row.caller_uri, row.caller_ip, row.caller_user_agent) == (
        "alice@example.test", "sip:alice@example.test", "192.0.2.10", "Softphone/1.0")
    assert (row.dialled, row.callee_uri) == ("sip:+4930123456@example.test",) * 2
    assert (row.target, row.destination) == ("sip:+4930123456@198.51.100.7:5060", "198.51.100.7:5060/udp")
    assert (row.domain, row.callee_user_agent, row.proxy) == ("example.test", "Gateway/2.3", "node-a")
    assert (row.setup_ms, row.ringing_ms, row.answer_ms, row.end_ms) == (T0, T0 + 180, T0 + 3000, T0 + 63_500)
    assert (row.duration_ms, row.billable_s, row.pdd_ms) == (60_500, 61, 180)
    assert (row.sip_code, row.sip_reason, row.disposition) == (200, "OK", "answered")
    assert (row.call_sip_code, row.call_disposition) == (200, "answered")
    assert (row.hangup_by, row.hangup_reason) == ("caller", "")


def test_callee_bye_with_reason_and_exact_seconds():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(2000).answer(0)
    c.at(12_000).bye("callee", reason='Q.850;cause=16')
    row = one(rows_of(c.events))
    assert (row.hangup_by, row.hangup_reason) == ("callee", "Q.850;cause=16")
    assert (row.duration_ms, row.billable_s) == (10_000, 10)
    assert row.ringing_ms == 0 and row.pdd_ms == 2000     # no provisional: PDD to the final


def test_busy():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(100).progress(0)
    c.at(900).leg_failed(0, 486, "Busy Here")
    assert finish(fold(c.events), 0) is None              # the call's final is still to come
    c.at(901).failed(486, "Busy Here")
    row = one(rows_of(c.events))
    assert (row.sip_code, row.disposition, row.call_sip_code, row.call_disposition) == (486, "busy", 486, "busy")
    assert (row.answer_ms, row.duration_ms, row.billable_s) == (0, 0, 0)
    assert (row.end_ms, row.pdd_ms, row.hangup_by, row.to_tag) == (T0 + 900, 100, "none", "sl-486")


def test_decline_600_is_busy():
    c = call()
    c.at(0).invite(); c.at(1).route(0)
    c.at(50).leg_failed(0, 600, "Busy Everywhere"); c.at(51).failed(600, "Busy Everywhere")
    assert one(rows_of(c.events)).disposition == "busy"


def test_cancel_by_caller():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(150).progress(0)
    c.at(4000).cancel()
    c.at(4020).leg_failed(0, 487, "Request Terminated")
    c.at(4021).failed(487, "Request Terminated")
    row = one(rows_of(c.events))
    assert (row.disposition, row.call_disposition, row.sip_code) == ("cancelled", "cancelled", 487)
    assert (row.end_ms, row.hangup_by) == (T0 + 4020, "none")


def test_no_answer_timer_c_cancel_487():
    # the proxy's Timer C cancels a ringing branch: a 487 without a caller CANCEL
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(150).progress(0)
    c.at(120_150).leg_failed(0, 487, "Request Terminated")
    c.at(120_151).failed(487, "Request Terminated")
    row = one(rows_of(c.events))
    assert (row.disposition, row.call_disposition) == ("no_answer", "no_answer")


@pytest.mark.parametrize("code,rang,expected", [(408, True, "no_answer"), (480, True, "no_answer"),
                                                (408, False, "failed"), (480, False, "failed"),
                                                (503, True, "failed"), (404, False, "failed")])
def test_no_answer_needs_ringing(code, rang, expected):
    c = call()
    c.at(0).invite(); c.at(1).route(0)
    if rang:
        c.at(100).progress(0)
    c.at(30_000).leg_failed(0, code, "x"); c.at(30_001).failed(code, "x", by_proxy=True)
    row = one(rows_of(c.events))
    assert (row.disposition, row.call_disposition) == (expected, expected)


@pytest.mark.parametrize("code,reason", [(404, "Not Found"), (480, "Temporarily Unavailable"),
                                         (403, "Forbidden (wrong password)")])
def test_refused_by_proxy_before_routing_gets_one_row(code, reason):
    c = call()
    c.account = None
    c.at(0).invite(); c.at(2).failed(code, reason, by_proxy=True)
    row = one(rows_of(c.events))
    assert (row.leg, row.legs, row.parent_leg, row.target, row.destination) == (0, 1, -1, "", "")
    assert (row.sip_code, row.sip_reason, row.disposition) == (code, reason, "failed")
    assert (row.call_sip_code, row.setup_ms, row.end_ms, row.pdd_ms) == (code, T0, T0 + 2, 2)
    assert (row.account, row.domain) == ("", "example.test")   # callee's domain when unauthenticated


def test_credit_402_is_rejected_credit():
    c = call()
    c.at(0).invite(); c.at(1).route(0)
    c.at(40).leg_failed(0, 402, "Payment Required"); c.at(41).failed(402, "Payment Required")
    row = one(rows_of(c.events))
    assert (row.disposition, row.call_disposition) == ("rejected_credit", "rejected_credit")


def test_forked_one_answered_one_cancelled():
    c = call()
    c.at(0).invite()
    c.at(3).route(0, host="198.51.100.7")
    c.at(4).route(1, cause="fork", host="198.51.100.8")
    c.at(150).progress(0); c.at(160).progress(1)
    c.at(4000).answer(1)
    c.at(4005).leg_failed(0, 487, "Request Terminated")
    c.at(4010).ack(1)
    c.at(34_000).bye("callee", leg=1)
    rows = rows_of(c.events)
    assert [r.leg for r in rows] == [0, 1] and {r.legs for r in rows} == {2}
    leg0, leg1 = rows
    assert (leg0.leg_cause, leg1.leg_cause, leg1.parent_leg) == ("initial", "fork", -1)
    assert (leg0.sip_code, leg0.disposition, leg0.answer_ms, leg0.end_ms) == (487, "cancelled", 0, T0 + 4005)
    assert (leg0.ringing_ms, leg1.ringing_ms) == (T0 + 150, T0 + 160)
    assert (leg1.sip_code, leg1.disposition, leg1.answer_ms, leg1.end_ms) == (200, "answered", T0 + 4000, T0 + 34_000)
    assert (leg1.duration_ms, leg1.billable_s, leg1.callee_user_agent, leg0.callee_user_agent) == (30_000, 30, "Gateway/2.3", "")
    assert leg1.destination == "198.51.100.8:5060/udp"
    for r in rows:     # call-level fields are the same on every row
        assert (r.cdr_id, r.setup_ms, r.pdd_ms, r.call_disposition, r.hangup_by, r.to_tag) == (
            leg1.cdr_id, T0, 150, "answered", "callee", "tt1")


def test_fork_without_final_of_its_own_is_cancelled():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(2).route(1, cause="fork")
    c.at(1000).answer(0); c.at(5000).bye("caller")
    rows = rows_of(c.events)
    assert (rows[1].sip_code, rows[1].disposition, rows[1].end_ms) == (0, "cancelled", T0 + 1000)


def test_failover_chain():
    c = call()
    c.at(0).invite(); c.at(3).route(0)
    c.at(500).leg_failed(0, 503, "Service Unavailable")
    c.at(501).route(1, parent=0, cause="failover", host="198.51.100.9")
    c.at(700).progress(1, 183, "Session Progress")
    c.at(3500).answer(1); c.at(3510).ack(1)
    c.at(63_500).bye("caller", leg=1)
    leg0, leg1 = rows_of(c.events)
    assert (leg0.sip_code, leg0.disposition, leg0.end_ms, leg0.ringing_ms) == (503, "failed", T0 + 500, 0)
    assert (leg1.parent_leg, leg1.leg_cause, leg1.target) == (0, "failover", "sip:+4930123456@198.51.100.9:5060")
    assert (leg1.disposition, leg1.duration_ms, leg1.pdd_ms) == ("answered", 60_000, 700)


def test_forward_on_busy_then_no_answer():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(100).progress(0)
    c.at(1000).leg_failed(0, 486, "Busy Here")
    c.at(1001).route(1, parent=0, cause="forward")
    c.at(1100).progress(1)
    c.at(31_000).leg_failed(1, 480, "Temporarily Unavailable")
    c.at(31_001).failed(486, "Busy Here")
    leg0, leg1 = rows_of(c.events)
    assert (leg0.disposition, leg1.disposition, leg1.leg_cause, leg1.parent_leg) == ("busy", "no_answer", "forward", 0)
    assert (leg0.call_sip_code, leg0.call_disposition, leg1.call_disposition) == (486, "busy", "busy")


def test_dialog_timeout():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(2000).answer(0, max_duration_s=120)
    c.at(122_000).timeout(120, T0 + 2000)
    row = one(rows_of(c.events))
    assert (row.hangup_by, row.hangup_reason) == ("timeout", "max duration 120 s")
    assert (row.end_ms, row.duration_ms, row.billable_s) == (T0 + 122_000, 120_000, 120)


def test_teardown_credit_exhausted():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(2000).answer(0)
    c.at(40_000).teardown("credit exhausted", result="unknown_call")   # another worker's answer
    assert rows_of(c.events) is None
    c.at(62_000).teardown("credit exhausted")
    row = one(rows_of(c.events))
    assert (row.hangup_by, row.hangup_reason, row.end_ms, row.duration_ms, row.billable_s) == (
        "teardown", "credit exhausted", T0 + 62_000, 60_000, 60)


def test_teardown_of_a_ringing_call():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(100).progress(0)
    c.at(5000).teardown("credit exhausted")
    assert rows_of(c.events) is None                      # the 487 is still to come
    c.at(5010).leg_failed(0, 487, "Request Terminated"); c.at(5011).failed(487, "Request Terminated")
    row = one(rows_of(c.events))
    assert (row.disposition, row.hangup_by, row.hangup_reason) == ("cancelled", "teardown", "credit exhausted")


def test_first_end_wins_and_crossing_byes():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(1000).answer(0)
    c.at(9000).bye("callee"); c.at(9002).bye("caller")
    row = one(rows_of(c.events))
    assert (row.hangup_by, row.end_ms) == ("callee", T0 + 9000)


def test_answer_crossing_cancel_is_answered():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(100).progress(0)
    c.at(3000).cancel(); c.at(3001).answer(0)
    assert rows_of(c.events) is None                      # answered: runs until its BYE
    c.at(3100).bye("caller")
    row = one(rows_of(c.events))
    assert (row.disposition, row.duration_ms, row.billable_s) == ("answered", 99, 1)


def test_leg_failed_after_call_failed_is_tolerated():
    c = call()
    c.at(0).invite(); c.at(1).route(0)
    c.at(900).failed(503, "Service Unavailable")
    early = one(rows_of(c.events))                        # the leg has the call's outcome
    assert (early.sip_code, early.disposition) == (503, "failed")
    c.at(901).leg_failed(0, 503, "Service Unavailable")
    late = one(rows_of(c.events))
    assert (late.sip_code, late.end_ms) == (503, T0 + 901)


def test_not_over_without_invite():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(50).failed(404, "Not Found")
    assert finish(fold(c.events[1:]), 0) is None          # invite missing: wait (silence closes it)
    assert is_over(fold(c.events[1:]))


# --- silence -------------------------------------------------------------------------

def test_silence_close_of_an_answered_call_is_capped_by_max_duration():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(2000).answer(0, max_duration_s=600); c.at(2010).ack(0)
    state = fold(c.events)
    window = 4 * 3600 * 1000
    assert silence_deadline_ms(state, window) == T0 + 2000 + 600_000 + window
    end = silence_end_ms(state, window)
    assert end == T0 + 2000 + 600_000
    row = one(finish(state, end, silence=True))
    assert (row.hangup_by, row.disposition, row.end_ms, row.duration_ms) == ("silence", "answered", end, 600_000)
    # a later set_max_duration counts
    c.at(3000).max_duration(60)
    assert silence_end_ms(fold(c.events), window) == T0 + 2000 + 60_000


def test_silence_close_of_a_ringing_call():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(100).progress(0)
    state = fold(c.events)
    end = silence_end_ms(state, 10_000)
    assert end == T0 + 10_100
    row = one(finish(state, end, silence=True))
    assert (row.hangup_by, row.disposition, row.call_sip_code, row.end_ms, row.sip_code) == (
        "silence", "failed", 0, T0 + 10_100, 0)


def test_silence_close_of_an_over_call_keeps_its_outcome():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(50).failed(404, "Not Found")
    state = fold(c.events[1:])                            # lost invite
    row = one(finish(state, silence_end_ms(state, 1000), silence=True))
    assert (row.sip_code, row.hangup_by, row.setup_ms, row.cdr_id) == (404, "none", T0 + 1, cdr_id_for("c1@test", "ft1"))


def test_silence_close_of_stray_events_records_nothing():
    c = call()
    c.at(0).invite(); c.at(1).route(0); c.at(1000).answer(0); c.at(5000).bye("caller")
    stray = fold([c.events[-1]])                          # a late duplicate BYE alone
    assert finish(stray, silence_end_ms(stray, 1000), silence=True) is None


# --- idempotence and order -------------------------------------------------------------

def test_duplicate_changes_nothing_and_returns_the_same_state():
    for shape in SHAPES:
        events = call_events(shape, f"{shape}@t", T0)
        state = fold(events)
        for event in events:
            assert apply(state, event) is state


def test_state_survives_its_changelog_encoding():
    for shape in SHAPES:
        events = call_events(shape, f"{shape}@t", T0)
        for cut in range(1, len(events) + 1):
            state = fold(events[:cut])
            data = msgspec.msgpack.encode(state)
            assert msgspec.msgpack.decode(data, type=CallState) == state


def test_every_shape_finishes_exactly_at_its_last_event():
    for shape in SHAPES:
        events = call_events(shape, f"{shape}@t", T0)
        state = new_state(events[0].call_id)
        for i, event in enumerate(events):
            state = apply(state, event)
            assert (finish(state, 0) is not None) == (i == len(events) - 1), (shape, i)


def test_replay_gives_identical_rows_byte_for_byte():
    encoder = msgspec.json.Encoder()
    for shape in SHAPES:
        events = call_events(shape, f"{shape}@t", T0)
        first = [encoder.encode(r) for r in rows_of(events)]
        again = [encoder.encode(r) for r in rows_of(list(events) + list(events))]
        decoded = [encoder.encode(r) for r in rows_of([msgspec.json.decode(encoder.encode(e), type=type(e))
                                                       for e in events])]
        assert first == again == decoded


@settings(max_examples=200, deadline=None)
@given(shape=st.sampled_from(SHAPES), data=st.data())
def test_any_permutation_of_duplicates_gives_the_same_rows(shape, data):
    events = call_events(shape, f"{shape}@t", T0)
    expected = rows_of(events)
    extra = data.draw(st.lists(st.sampled_from(events), max_size=len(events) * 2))
    shuffled = data.draw(st.permutations(events + extra))
    assert fold(shuffled) == fold(events)
    assert rows_of(shuffled) == expected


# --- issue 14: media timeouts, session timers, media statistics ----------------------

def answered_call() -> CallBuilder:
    c = call()
    c.at(0).invite()
    c.at(1).route(0)
    c.at(2000).answer(0)
    c.at(2010).ack(0)
    return c


def test_media_timeout_ends_the_call_at_the_last_media_not_at_detection():
    c = answered_call()
    assert finish(fold(c.events), 0) is None
    c.at(42_000).media_timeout(T0 + 12_000, reason="media timeout: callee silent for 30 s")
    row = one(rows_of(c.events))
    assert (row.end_ms, row.duration_ms, row.billable_s) == (T0 + 12_000, 10_000, 10)
    assert (row.hangup_by, row.hangup_reason) == ("media_timeout", "media timeout: callee silent for 30 s")


def test_media_timeout_never_ends_before_the_answer():
    # no packet ever seen from the silent side (last_media_ms 0): the call ends at its answer
    c = answered_call()
    c.at(32_000).media_timeout(0, silent="both")
    row = one(rows_of(c.events))
    assert (row.end_ms, row.duration_ms, row.billable_s, row.hangup_by) == (T0 + 2000, 0, 0, "media_timeout")


def test_media_timeout_detected_after_a_bye_but_with_earlier_media_is_the_end():
    c = answered_call()
    c.at(40_000).bye("caller")                       # the caller gave up on a dead call
    c.at(41_000).media_timeout(T0 + 12_000)          # ... the proxy's detection came after, media died before
    row = one(rows_of(c.events))
    assert (row.end_ms, row.hangup_by) == (T0 + 12_000, "media_timeout")
    # and the other way round: a BYE before the media stopped is the end
    c = answered_call()
    c.at(10_000).bye("callee")
    c.at(41_000).media_timeout(T0 + 11_000)
    row = one(rows_of(c.events))
    assert (row.end_ms, row.hangup_by) == (T0 + 10_000, "callee")


def test_session_expiry_ends_the_call_at_its_time():
    c = answered_call()
    c.at(1_802_000).session_expired(1800, last_refresh_ms=T0 + 2000)
    row = one(rows_of(c.events))
    assert (row.end_ms, row.duration_ms, row.hangup_by) == (T0 + 1_802_000, 1_800_000, "session_timer")
    assert row.hangup_reason == "session expired: no refresh within 1800 s"


def flow(packets: int, last_ms: int, **quality) -> ev.MediaFlow:
    return ev.MediaFlow(packets=packets, bytes=packets * 172, errors=1, last_packet_ms=last_ms, **quality)


def test_media_stats_land_in_the_row_of_their_leg_and_the_latest_wins():
    c = call()
    c.at(0).invite()
    c.at(1).route(0)
    c.at(2).route(1, parent=0, cause="fork")
    c.at(2000).answer(1)
    c.at(2010).ack(1)
    c.at(10_000).bye("caller", leg=1)
    c.at(10_001).media_stats(1, caller=flow(400, T0 + 9990, lost=3, jitter_ms=2, mos_x10=43),
                             callee=flow(390, T0 + 9995))
    c.at(10_500).media_stats(1, caller=flow(401, T0 + 9999), callee=flow(391, T0 + 9996))   # a re-read
    rows = rows_of(c.events)
    assert rows is not None and [r.leg for r in rows] == [0, 1]
    fork, answered = rows
    assert (fork.caller_rtp_packets, fork.media_relay, fork.last_media_ms, fork.caller_rtp_lost) == (0, "", 0, None)
    assert (answered.caller_rtp_packets, answered.caller_rtp_bytes, answered.caller_rtp_errors) == (401, 401 * 172, 1)
    assert (answered.callee_rtp_packets, answered.callee_rtp_bytes) == (391, 391 * 172)
    assert (answered.caller_rtp_lost, answered.caller_rtp_jitter_ms, answered.caller_rtp_mos_x10) == (None,) * 3
    assert (answered.media_relay, answered.last_media_ms) == ("udp:127.0.0.1:2223", T0 + 9999)
    assert answered.end_ms == T0 + 10_000                    # stats never move the end


def test_media_stats_without_a_leg_belong_to_the_answered_leg():
    c = answered_call()
    c.at(9000).bye("callee")
    c.at(9001).media_stats(None, caller=flow(350, T0 + 8990, lost=0, jitter_ms=1, mos_x10=44),
                           callee=flow(349, T0 + 8999))
    row = one(rows_of(c.events))
    assert (row.caller_rtp_packets, row.caller_rtp_lost, row.caller_rtp_jitter_ms, row.caller_rtp_mos_x10) == (
        350, 0, 1, 44)
    assert (row.callee_rtp_packets, row.callee_rtp_lost, row.last_media_ms) == (349, None, T0 + 8999)


def media_call_events() -> list:
    c = answered_call()
    c.at(5000).media_stats(0, caller=flow(100, T0 + 4990), callee=flow(99, T0 + 4995))
    c.at(42_000).media_timeout(T0 + 12_000)
    c.at(42_001).media_stats(0, caller=flow(500, T0 + 41_990), callee=flow(300, T0 + 12_000))
    c.at(42_002).media_stats(None, caller=flow(501, T0 + 41_999), callee=flow(300, T0 + 12_000))
    return c.events


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_media_events_are_idempotent_under_duplicates_and_reordering(data):
    events = media_call_events()
    expected = rows_of(events)
    row = one(expected)
    assert (row.caller_rtp_packets, row.end_ms, row.hangup_by) == (501, T0 + 12_000, "media_timeout")
    extra = data.draw(st.lists(st.sampled_from(events), max_size=len(events) * 2))
    shuffled = data.draw(st.permutations(events + extra))
    assert fold(shuffled) == fold(events)
    assert rows_of(shuffled) == expected
    state = fold(shuffled)
    for event in events:
        assert apply(state, event) is state
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=CallState) == state


def test_a_changelog_state_from_before_issue_14_still_decodes():
    # states in the changelog were written without End.at and CallState.media
    events = call_events("answered_caller_bye", "old@t", T0)
    state = fold(events)
    as_list = msgspec.msgpack.decode(msgspec.msgpack.encode(state))
    as_list = as_list[:-1]                                   # no media
    as_list[-2] = [end[:5] for end in as_list[-2]]           # End without at
    old = msgspec.msgpack.decode(msgspec.msgpack.encode(as_list), type=CallState)
    assert old == state and rows_of(events) == finish(old, 0)


def test_a_dropped_binding_is_not_a_call():
    dropped = ev.BindingDropped(id="d1", ts_ms=T0, call_id="reg@t", from_tag="", proxy="node-a",
                                aor="sip:bob@example.test", contact="sip:bob@192.168.1.20",
                                received="203.0.113.9:4000/udp", reason="keepalive_timeout", failures=3)
    assert not is_call_event(dropped)
    assert all(is_call_event(e) for e in media_call_events())
    state = new_state("reg@t")
    assert apply(state, dropped) is state
    assert finish(state, T0, silence=True) is None           # nothing to record, even on a silence close
