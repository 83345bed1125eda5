"""Transaction state machines (RFC 3261 §17, RFC 6026), timers and keys.

No sleeping: timers are fired by calling ``on_timer`` (directly or through the
virtual-clock ``Driver``).
"""
from __future__ import annotations

import pytest

from proxy.sip.message import SipMessage, parse
from proxy.sip.via import ViaError
from proxy.transactions import (
    TERMINATED,
    TIMED_OUT,
    TRANSPORT_FAILED,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    PassUp,
    StartTimer,
    State,
    StopTimer,
    TimerConfig,
    TransactionStateError,
    Transmit,
    build_non2xx_ack,
    client_key,
    invite_key_for_cancel,
    new_branch,
    server_key,
)
from tests.harness.transactions import Driver, make_ack, make_cancel, make_request, make_response

RELIABILITY = pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])


# ---------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------
class TestTimerConfig:
    def test_unreliable_values_follow_rfc3261_table4_and_rfc6026(self):
        t = TimerConfig().for_transport(False)
        assert (t.a, t.b, t.d, t.e, t.f, t.g, t.h) == (0.5, 32.0, 32.0, 0.5, 32.0, 0.5, 32.0)
        assert (t.i, t.j, t.k, t.l, t.m) == (5.0, 32.0, 5.0, 32.0, 32.0)
        assert t.t2 == 4.0

    def test_reliable_transport_disables_retransmission_and_zeroes_waits(self):
        t = TimerConfig().for_transport(True)
        assert t.a is None and t.e is None and t.g is None
        assert (t.d, t.i, t.j, t.k) == (0.0, 0.0, 0.0, 0.0)
        assert (t.b, t.f, t.h, t.l, t.m) == (32.0, 32.0, 32.0, 32.0, 32.0)

    def test_values_scale_with_t1(self):
        t = TimerConfig(t1=1.0, t2=8.0, t4=6.0).for_transport(False)
        assert (t.a, t.b, t.f, t.h, t.j, t.l, t.m) == (1.0, 64.0, 64.0, 64.0, 64.0, 64.0, 64.0)
        assert t.i == t.k == 6.0
        # D covers the server's retransmission window, never under 32 s.
        assert t.d == 64.0
        assert TimerConfig(t1=0.1).for_transport(False).d == 32.0

    def test_resolution_is_shared(self):
        assert TimerConfig().for_transport(False) is TimerConfig().for_transport(False)

    @pytest.mark.parametrize("kwargs", [dict(t1=0), dict(t1=5.0, t2=4.0), dict(t4=-1)])
    def test_invalid_config_rejected(self, kwargs):
        with pytest.raises(ValueError):
            TimerConfig(**kwargs)


# ---------------------------------------------------------------------------
# INVITE client
# ---------------------------------------------------------------------------
def invite_client(reliable=False, **kw):
    invite = make_request("INVITE", **kw)
    tx = InviteClientTransaction(invite, reliable=reliable, timers=TimerConfig())
    driver = Driver(tx)
    return tx, driver, invite


class TestInviteClient:
    @RELIABILITY
    def test_start_sends_invite_and_arms_a_only_when_unreliable(self, reliable):
        tx, d, invite = invite_client(reliable)
        actions = tx.start()
        expected = [Transmit(invite)] + ([] if reliable else [StartTimer("A", 0.5)])
        assert actions == expected + [StartTimer("B", 32.0)]
        assert tx.state is State.CALLING

    def test_timer_a_doubles_without_t2_cap_until_b(self):
        # RFC 3261 §17.1.1.2: A resets to 2*A (no T2 cap, unlike E and G);
        # B = 64*T1 ends it: 7 transmissions at 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5.
        tx, d, invite = invite_client(False)
        d.apply(tx.start())
        d.run()
        assert d.transmit_times(invite) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        assert [s.delay for s in d.started if s.name == "A"] == [0.5, 1, 2, 4, 8, 16, 32]
        assert d.now == 32.0 and d.outcomes == [TIMED_OUT]
        assert tx.state is State.TERMINATED and d.terminated

    def test_timer_b_on_reliable_transport_times_out_after_one_transmission(self):
        tx, d, invite = invite_client(True)
        d.apply(tx.start())
        assert d.fire_next() == [TIMED_OUT, TERMINATED]
        assert d.transmit_times() == [0.0] and d.now == 32.0

    @RELIABILITY
    def test_provisional_moves_to_proceeding_and_stops_retransmission(self, reliable):
        tx, d, invite = invite_client(reliable)
        d.apply(tx.start())
        ringing = make_response(invite, 180)
        actions = d.apply(tx.on_response(ringing))
        assert actions == ([] if reliable else [StopTimer("A")]) + [PassUp(ringing)]
        assert tx.state is State.PROCEEDING
        assert "B" in d.timers and "A" not in d.timers      # B is left running
        again = make_response(invite, 183)
        assert tx.on_response(again) == [PassUp(again)]
        assert tx.on_response(ringing) == [PassUp(ringing)]
        # Timer B has no transition in Proceeding (Figure 5): the TU's Timer C rules.
        assert d.fire_next() == [] and tx.state is State.PROCEEDING
        assert d.transmit_times() == [0.0]

    @pytest.mark.parametrize("via_proceeding", [False, True])
    @RELIABILITY
    def test_2xx_enters_accepted_and_later_2xx_are_passed_up(self, reliable, via_proceeding):
        tx, d, invite = invite_client(reliable)
        d.apply(tx.start())
        if via_proceeding:
            d.apply(tx.on_response(make_response(invite, 180)))
        ok = make_response(invite, 200)
        actions = d.apply(tx.on_response(ok))
        stops = [StopTimer("B")] if reliable or via_proceeding else [StopTimer("A"), StopTimer("B")]
        assert actions == stops + [PassUp(ok), StartTimer("M", 32.0)]
        assert tx.state is State.ACCEPTED
        # RFC 6026 §8.4: retransmissions and other forks' 2xx reach the TU.
        assert tx.on_response(ok) == [PassUp(ok)]
        fork = make_response(invite, 200, to_tag="other-fork")
        assert tx.on_response(fork) == [PassUp(fork)]
        assert tx.on_response(make_response(invite, 180)) == []
        assert tx.on_response(make_response(invite, 486)) == []
        assert tx.on_transport_error() == []
        assert tx.on_timer("A") == [] and tx.on_timer("B") == []
        assert d.timers == {"M": 32.0}
        assert d.fire_next() == [TERMINATED]
        assert tx.state is State.TERMINATED
        assert tx.ack is None     # the ACK of a 2xx is the TU's, not ours

    @pytest.mark.parametrize("status", [300, 404, 486, 503, 603])
    def test_non_2xx_final_is_acked_passed_up_once_and_ack_retransmitted(self, status):
        tx, d, invite = invite_client(False)
        d.apply(tx.start())
        busy = make_response(invite, status)
        actions = d.apply(tx.on_response(busy))
        ack = tx.ack
        assert actions == [StopTimer("A"), StopTimer("B"), PassUp(busy), Transmit(ack),
                           StartTimer("D", 32.0)]
        assert tx.state is State.COMPLETED
        # RFC 3261 §17.1.1.2: retransmitted final -> same ACK again, TU not told.
        assert tx.on_response(busy) == [Transmit(ack)]
        assert tx.on_response(make_response(invite, 500)) == [Transmit(ack)]
        assert tx.on_response(make_response(invite, 200)) == []
        assert tx.on_response(make_response(invite, 180)) == []
        assert tx.on_timer("A") == [] and tx.on_timer("B") == []
        assert d.fire_next() == [TERMINATED] and d.now == 32.0
        assert d.passed_up == [busy]

    def test_non_2xx_final_on_reliable_transport_terminates_at_once(self):
        tx, d, invite = invite_client(True)
        d.apply(tx.start())
        busy = make_response(invite, 486)
        assert d.apply(tx.on_response(busy)) == [StopTimer("B"), PassUp(busy), Transmit(tx.ack),
                                                 TERMINATED]
        assert tx.state is State.TERMINATED

    def test_non_2xx_after_provisional(self):
        tx, d, invite = invite_client(False)
        d.apply(tx.start())
        d.apply(tx.on_response(make_response(invite, 180)))
        busy = make_response(invite, 486)
        actions = tx.on_response(busy)
        assert Transmit(tx.ack) in actions and PassUp(busy) in actions
        assert tx.state is State.COMPLETED

    def test_ack_for_non_2xx_follows_rfc3261_17_1_1_3(self):
        invite = make_request("INVITE", cseq=314, routes=("<sip:p1.example.com;lr>",
                                                          "<sip:p2.example.com;lr>"))
        busy = make_response(invite, 486, to_tag="uas-tag")
        ack = build_non2xx_ack(invite, busy)
        assert ack.method == "ACK" and ack.uri == invite.uri
        assert ack.get_all("via") == [invite.top_via]           # one Via: the INVITE's top
        assert ack.values("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        assert ack.get("from") == invite.get("from")
        assert ack.get("to") == busy.get("to") and ack.get("to").endswith(";tag=uas-tag")
        assert ack.call_id == invite.call_id
        assert ack.cseq == (314, "ACK")
        assert ack.get("max-forwards") == "70"
        assert ack.body == b"" and not ack.has("contact") and not ack.has("content-type")
        reparsed = parse(ack.serialize())                       # valid on the wire
        assert reparsed.cseq == (314, "ACK") and reparsed.get("content-length") == "0"
        # The ACK matches the server transaction of the INVITE at the next hop.
        assert server_key(reparsed) == server_key(invite)
        # Building it does not touch the INVITE.
        assert invite.get("to") == "<sip:bob@biloxi.example.com>"

    def test_ack_takes_the_invite_top_via_even_from_a_folded_via_line(self):
        invite = make_request("INVITE")
        invite.headers = [h for h in invite.headers if h[0] != "via"]
        invite.prepend("via", "SIP/2.0/UDP p.example.com;branch=z9hG4bKa, SIP/2.0/UDP c.example.com")
        ack = build_non2xx_ack(invite, make_response(invite, 404))
        assert ack.get_all("via") == ["SIP/2.0/UDP p.example.com;branch=z9hG4bKa"]

    @pytest.mark.parametrize("in_proceeding", [False, True])
    @RELIABILITY
    def test_transport_error_before_final_informs_tu(self, reliable, in_proceeding):
        tx, d, invite = invite_client(reliable)
        d.apply(tx.start())
        if in_proceeding:
            d.apply(tx.on_response(make_response(invite, 100)))
        assert d.apply(tx.on_transport_error()) == [TRANSPORT_FAILED, TERMINATED]
        assert tx.state is State.TERMINATED

    def test_transport_error_sending_ack_only_terminates(self):
        tx, d, invite = invite_client(False)
        d.apply(tx.start())
        d.apply(tx.on_response(make_response(invite, 404)))
        assert tx.on_transport_error() == [TERMINATED]
        assert tx.state is State.TERMINATED

    def test_everything_is_ignored_once_terminated(self):
        tx, d, invite = invite_client(False)
        d.apply(tx.start())
        d.apply(tx.on_timer("B"))
        for status in (100, 180, 200, 404):
            assert tx.on_response(make_response(invite, status)) == []
        for name in "ABDMZ":
            assert tx.on_timer(name) == []
        assert tx.on_transport_error() == []

    def test_stale_and_unknown_timers_are_ignored(self):
        tx, d, invite = invite_client(False)
        d.apply(tx.start())
        for name in ("D", "M", "E", "K", "", "A2", "timer A"):
            assert tx.on_timer(name) == []
        assert tx.state is State.CALLING

    def test_non_response_input_is_ignored(self):
        tx, d, invite = invite_client(False)
        d.apply(tx.start())
        assert tx.on_response(make_request("BYE")) == []
        assert tx.on_response(SipMessage.response(700, "Weird")) == []
        assert tx.state is State.CALLING


# ---------------------------------------------------------------------------
# INVITE server
# ---------------------------------------------------------------------------
def invite_server(reliable=False):
    invite = make_request("INVITE")
    tx = InviteServerTransaction(invite, reliable=reliable)
    return tx, Driver(tx), invite


class TestInviteServer:
    @RELIABILITY
    def test_proceeding_retransmits_latest_provisional(self, reliable):
        tx, d, invite = invite_server(reliable)
        assert tx.state is State.PROCEEDING and tx.last_response is None
        assert tx.on_request(invite) == []          # nothing sent yet: nothing to resend
        trying = make_response(invite, 100)
        assert tx.send_response(trying) == [Transmit(trying)]
        assert tx.last_response is trying
        assert tx.on_request(invite) == [Transmit(trying)]
        ringing = make_response(invite, 180)
        assert tx.send_response(ringing) == [Transmit(ringing)]
        assert tx.on_request(invite) == [Transmit(ringing)]
        assert tx.state is State.PROCEEDING
        assert tx.on_request(make_ack(invite)) == []    # ACK before any final: ignored

    @RELIABILITY
    def test_2xx_enters_accepted_per_rfc6026(self, reliable):
        tx, d, invite = invite_server(reliable)
        d.apply(tx.send_response(make_response(invite, 180)))
        ok = make_response(invite, 200)
        assert d.apply(tx.send_response(ok)) == [Transmit(ok), StartTimer("L", 32.0)]
        assert tx.state is State.ACCEPTED and tx.last_response is ok
        assert tx.on_request(invite) == []              # absorbed: the TU retransmits 2xx
        ack = make_ack(invite)
        assert tx.on_request(ack) == [PassUp(ack)]      # belongs to the dialog
        assert tx.on_request(ack) == [PassUp(ack)]
        ok_again = make_response(invite, 200)
        assert tx.send_response(ok_again) == [Transmit(ok_again)]
        assert tx.on_transport_error() == [TRANSPORT_FAILED]     # RFC 6026 §7.1: stays
        assert tx.state is State.ACCEPTED
        assert tx.on_timer("G") == [] and tx.on_timer("H") == []
        assert d.fire_next() == [TERMINATED] and d.now == 32.0

    @pytest.mark.parametrize("status", [180, 486])
    def test_accepted_refuses_non_2xx(self, status):
        tx, d, invite = invite_server()
        tx.send_response(make_response(invite, 200))
        with pytest.raises(TransactionStateError):
            tx.send_response(make_response(invite, status))
        assert tx.state is State.ACCEPTED

    def test_non_2xx_retransmitted_on_timer_g_doubling_to_t2_until_h(self):
        tx, d, invite = invite_server(False)
        busy = make_response(invite, 486)
        assert d.apply(tx.send_response(busy)) == [Transmit(busy), StartTimer("G", 0.5),
                                                   StartTimer("H", 32.0)]
        assert tx.state is State.COMPLETED
        d.run()
        assert d.transmit_times(busy) == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5,
                                          27.5, 31.5]
        assert [s.delay for s in d.started if s.name == "G"] == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4, 4]
        assert d.outcomes == [TIMED_OUT] and d.now == 32.0 and tx.terminated

    def test_non_2xx_on_reliable_transport_waits_for_ack_without_retransmitting(self):
        tx, d, invite = invite_server(True)
        busy = make_response(invite, 486)
        assert d.apply(tx.send_response(busy)) == [Transmit(busy), StartTimer("H", 32.0)]
        assert d.fire_next() == [TIMED_OUT, TERMINATED]
        assert d.transmit_times() == [0.0]

    def test_completed_answers_retransmitted_invite_with_final(self):
        tx, d, invite = invite_server(False)
        d.apply(tx.send_response(make_response(invite, 180)))
        busy = make_response(invite, 486)
        d.apply(tx.send_response(busy))
        assert tx.on_request(invite) == [Transmit(busy)]

    def test_ack_confirms_then_timer_i_terminates(self):
        tx, d, invite = invite_server(False)
        d.apply(tx.send_response(make_response(invite, 404)))
        d.run(until=1.0)
        ack = make_ack(invite)
        assert d.apply(tx.on_request(ack)) == [StopTimer("G"), StopTimer("H"), StartTimer("I", 5.0)]
        assert tx.state is State.CONFIRMED and d.timers == {"I": 6.0}
        assert tx.on_request(ack) == []                 # absorbed
        assert tx.on_request(invite) == []
        assert tx.on_timer("G") == [] and tx.on_timer("H") == []
        assert tx.on_transport_error() == []
        assert d.fire_next() == [TERMINATED]
        assert d.outcomes == [] and d.passed_up == []   # the ACK of a non-2xx stays here

    def test_ack_on_reliable_transport_terminates_at_once(self):
        tx, d, invite = invite_server(True)
        d.apply(tx.send_response(make_response(invite, 404)))
        assert d.apply(tx.on_request(make_ack(invite))) == [StopTimer("H"), TERMINATED]

    @pytest.mark.parametrize("status", [None, 404], ids=["proceeding", "completed"])
    @RELIABILITY
    def test_transport_error_informs_tu_and_terminates(self, reliable, status):
        tx, d, invite = invite_server(reliable)
        d.apply(tx.send_response(make_response(invite, 100)))
        if status:
            d.apply(tx.send_response(make_response(invite, status)))
        assert d.apply(tx.on_transport_error()) == [TRANSPORT_FAILED, TERMINATED]

    @pytest.mark.parametrize("status", [100, 180, 200, 404])
    def test_responses_after_a_non_2xx_final_are_refused(self, status):
        tx, d, invite = invite_server(False)
        d.apply(tx.send_response(make_response(invite, 486)))
        with pytest.raises(TransactionStateError, match="Completed cannot send"):
            tx.send_response(make_response(invite, status))
        d.apply(tx.on_request(make_ack(invite)))
        with pytest.raises(TransactionStateError, match="Confirmed"):
            tx.send_response(make_response(invite, status))
        d.run()
        with pytest.raises(TransactionStateError, match="Terminated"):
            tx.send_response(make_response(invite, status))
        assert tx.last_response.status == 486

    def test_non_response_is_rejected(self):
        tx, d, invite = invite_server(False)
        with pytest.raises(ValueError):
            tx.send_response(make_request("BYE"))

    def test_other_methods_are_not_retransmissions(self):
        tx, d, invite = invite_server(False)
        d.apply(tx.send_response(make_response(invite, 180)))
        assert tx.on_request(make_cancel(invite)) == []


# ---------------------------------------------------------------------------
# Non-INVITE client
# ---------------------------------------------------------------------------
def noninvite_client(reliable=False, method="OPTIONS"):
    request = make_request(method)
    tx = NonInviteClientTransaction(request, reliable=reliable)
    return tx, Driver(tx), request


class TestNonInviteClient:
    @RELIABILITY
    def test_start(self, reliable):
        tx, d, request = noninvite_client(reliable)
        expected = [Transmit(request)] + ([] if reliable else [StartTimer("E", 0.5)])
        assert tx.start() == expected + [StartTimer("F", 32.0)]
        assert tx.state is State.TRYING

    def test_timer_e_doubles_up_to_t2_then_f_times_out(self):
        tx, d, request = noninvite_client(False)
        d.apply(tx.start())
        d.run()
        assert d.transmit_times(request) == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5,
                                             27.5, 31.5]
        assert max(s.delay for s in d.started if s.name == "E") == 4.0
        assert d.outcomes == [TIMED_OUT] and tx.terminated and d.now == 32.0

    def test_reliable_times_out_after_one_transmission(self):
        tx, d, request = noninvite_client(True)
        d.apply(tx.start())
        d.run()
        assert d.transmit_times() == [0.0] and d.outcomes == [TIMED_OUT]

    def test_proceeding_keeps_retransmitting_every_t2(self):
        tx, d, request = noninvite_client(False)
        d.apply(tx.start())
        d.run(until=1.0)                                  # sent at 0 and 0.5; E next at 1.5
        trying = make_response(request, 100)
        assert d.apply(tx.on_response(trying)) == [PassUp(trying)]
        assert tx.state is State.PROCEEDING
        d.run(until=14.0)
        assert d.transmit_times(request) == [0.0, 0.5, 1.5, 5.5, 9.5, 13.5]
        assert tx.on_response(trying) == [PassUp(trying)]
        d.run()
        assert d.outcomes == [TIMED_OUT]                  # Timer F still applies

    @pytest.mark.parametrize("status", [200, 202, 302, 404, 500, 603])
    @pytest.mark.parametrize("in_proceeding", [False, True])
    def test_final_completes_then_k_terminates(self, status, in_proceeding):
        tx, d, request = noninvite_client(False)
        d.apply(tx.start())
        if in_proceeding:
            d.apply(tx.on_response(make_response(request, 100)))
        final = make_response(request, status)
        assert d.apply(tx.on_response(final)) == [StopTimer("E"), StopTimer("F"), PassUp(final),
                                                  StartTimer("K", 5.0)]
        assert tx.state is State.COMPLETED
        assert tx.on_response(final) == []                # absorbed
        assert tx.on_response(make_response(request, 180)) == []
        assert tx.on_timer("E") == [] and tx.on_timer("F") == []
        assert tx.on_transport_error() == []
        assert d.fire_next() == [TERMINATED] and d.now == 5.0
        assert d.passed_up[-1] is final

    def test_final_on_reliable_transport_terminates_at_once(self):
        tx, d, request = noninvite_client(True)
        d.apply(tx.start())
        ok = make_response(request, 200)
        assert d.apply(tx.on_response(ok)) == [StopTimer("F"), PassUp(ok), TERMINATED]

    @pytest.mark.parametrize("in_proceeding", [False, True])
    def test_transport_error(self, in_proceeding):
        tx, d, request = noninvite_client(False)
        d.apply(tx.start())
        if in_proceeding:
            d.apply(tx.on_response(make_response(request, 100)))
        assert d.apply(tx.on_transport_error()) == [TRANSPORT_FAILED, TERMINATED]


# ---------------------------------------------------------------------------
# Non-INVITE server
# ---------------------------------------------------------------------------
def noninvite_server(reliable=False, method="BYE"):
    request = make_request(method)
    tx = NonInviteServerTransaction(request, reliable=reliable)
    return tx, Driver(tx), request


class TestNonInviteServer:
    def test_trying_absorbs_retransmissions(self):
        tx, d, request = noninvite_server()
        assert tx.state is State.TRYING
        assert tx.on_request(request) == []
        assert tx.on_transport_error() == []              # nothing sent yet
        assert tx.state is State.TRYING

    @RELIABILITY
    def test_provisional_then_final(self, reliable):
        tx, d, request = noninvite_server(reliable)
        trying = make_response(request, 100)
        assert tx.send_response(trying) == [Transmit(trying)]
        assert tx.state is State.PROCEEDING
        assert tx.on_request(request) == [Transmit(trying)]
        ok = make_response(request, 200)
        actions = d.apply(tx.send_response(ok))
        assert actions == [Transmit(ok), TERMINATED if reliable else StartTimer("J", 32.0)]

    @pytest.mark.parametrize("status", [200, 404, 481, 500])
    def test_final_from_trying_and_retransmissions_in_completed(self, status):
        tx, d, request = noninvite_server(False)
        final = make_response(request, status)
        assert d.apply(tx.send_response(final)) == [Transmit(final), StartTimer("J", 32.0)]
        assert tx.state is State.COMPLETED
        assert tx.on_request(request) == [Transmit(final)]
        assert tx.on_request(request) == [Transmit(final)]
        assert d.fire_next() == [TERMINATED] and d.now == 32.0
        assert tx.on_request(request) == []

    @pytest.mark.parametrize("status", [100, 200, 500])
    def test_responses_after_final_are_refused(self, status):
        tx, d, request = noninvite_server(False)
        d.apply(tx.send_response(make_response(request, 200)))
        with pytest.raises(TransactionStateError, match="Completed"):
            tx.send_response(make_response(request, status))
        d.run()
        with pytest.raises(TransactionStateError, match="Terminated"):
            tx.send_response(make_response(request, status))

    @pytest.mark.parametrize("final", [False, True])
    def test_transport_error(self, final):
        tx, d, request = noninvite_server(False)
        d.apply(tx.send_response(make_response(request, 200 if final else 100)))
        assert d.apply(tx.on_transport_error()) == [TRANSPORT_FAILED, TERMINATED]


# ---------------------------------------------------------------------------
# Matching keys
# ---------------------------------------------------------------------------
class TestServerKeys:
    def test_retransmission_matches(self):
        assert server_key(make_request("INVITE")) == server_key(make_request("INVITE"))

    def test_ack_matches_its_invite(self):
        invite = make_request("INVITE", branch="z9hG4bKinv")
        assert server_key(make_ack(invite)) == server_key(invite)

    def test_cancel_is_its_own_transaction_but_targets_the_invite(self):
        invite = make_request("INVITE", branch="z9hG4bKinv")
        cancel = make_cancel(invite)
        assert server_key(cancel) != server_key(invite)
        assert invite_key_for_cancel(cancel) == server_key(invite)
        assert server_key(cancel) == server_key(make_cancel(invite))

    @pytest.mark.parametrize("change", [
        dict(branch="z9hG4bKother"), dict(sent_by="other.example.com"),
        dict(sent_by="proxy.example.com:5070"),
    ])
    def test_branch_and_sent_by_distinguish(self, change):
        assert server_key(make_request("INVITE", **change)) != server_key(make_request("INVITE"))

    def test_method_distinguishes_same_branch(self):
        assert server_key(make_request("BYE")) != server_key(make_request("INVITE"))

    def test_only_branch_sent_by_and_method_count(self):
        a = make_request("INVITE", cseq=1, call_id="x", from_tag="a", uri="sip:a@a.example.com")
        b = make_request("INVITE", cseq=2, call_id="y", from_tag="b", uri="sip:b@b.example.com")
        assert server_key(a) == server_key(b)

    def test_case_insensitive_branch_and_host(self):
        lower = make_request("INVITE", branch="z9hG4bKabc", sent_by="proxy.example.com")
        upper = make_request("INVITE", branch="z9hG4bKABC", sent_by="PROXY.example.COM")
        assert server_key(lower) == server_key(upper)

    def test_received_and_rport_do_not_change_the_key(self):
        plain = make_request("INVITE")
        stamped = make_request("INVITE")
        stamped.replace_first_value("via", stamped.top_via + ";received=192.0.2.7;rport=5062")
        assert server_key(plain) == server_key(stamped)

    @pytest.mark.parametrize("branch", [None, "1234abcd"], ids=["no-branch", "no-cookie"])
    def test_rfc2543_fallback(self, branch):
        invite = make_request("INVITE", branch=branch, cseq=5)
        key = server_key(invite)
        assert key[0] == "rfc2543"
        assert server_key(make_request("INVITE", branch=branch, cseq=5)) == key
        ack = make_request("ACK", branch=branch, cseq=5, to_tag="uas-tag")
        assert server_key(ack) == key                     # To tag of the response ignored
        cancel = make_request("CANCEL", branch=branch, cseq=5)
        assert invite_key_for_cancel(cancel) == key and server_key(cancel) != key
        for change in (dict(cseq=6), dict(from_tag="zz"), dict(call_id="other"),
                       dict(uri="sip:carol@chicago.example.com"),
                       dict(sent_by="elsewhere.example.com")):
            fields = dict(branch=branch, cseq=5) | change
            assert server_key(make_request("INVITE", **fields)) != key
        bye = make_request("BYE", branch=branch, cseq=5)
        assert server_key(bye) != key

    @pytest.mark.parametrize("via", [None, ",", "garbage"])
    def test_missing_or_malformed_via_is_a_value_error(self, via):
        request = make_request("OPTIONS")
        request.remove("via")
        if via is not None:
            request.add("via", via)
        with pytest.raises(ValueError):
            server_key(request)
        with pytest.raises(ViaError):
            client_key(request)


class TestClientKeys:
    def test_response_matches_request(self):
        invite = make_request("INVITE", branch="z9hG4bKcli")
        assert client_key(make_response(invite, 180)) == client_key(invite) == \
            ("z9hg4bkcli", "INVITE")

    def test_cancel_responses_are_told_from_invite_responses(self):
        invite = make_request("INVITE", branch="z9hG4bKcli")
        cancel = make_cancel(invite)
        assert client_key(make_response(cancel, 200)) == client_key(cancel)
        assert client_key(make_response(cancel, 200)) != client_key(make_response(invite, 200))


class TestNewBranch:
    def test_cookie_and_uniqueness(self):
        branches = {new_branch() for _ in range(20000)}
        assert len(branches) == 20000
        for b in list(branches)[:50]:
            assert b.startswith("z9hG4bK") and b[7:] == b[7:].lower() and len(b) == 7 + 16

    def test_seed_digest_is_stable_and_random_part_unique(self):
        seeds = ("sip:bob@biloxi.example.com", "ft1", "call-1", "1")
        a, b = new_branch(seeds), new_branch(list(seeds))
        assert a != b
        assert a.split(".")[0] == b.split(".")[0]
        assert new_branch(("other",)).split(".")[0] != a.split(".")[0]
        assert a.startswith("z9hG4bK")

    def test_new_branch_round_trips_through_keys(self):
        branch = new_branch()
        request = make_request("INVITE", branch=branch)
        assert server_key(request)[0] == branch.lower()
        assert client_key(make_response(request, 100))[0] == branch.lower()


# ---------------------------------------------------------------------------
# Cross-machine details
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls, timer", [(InviteClientTransaction, "A"),
                                        (NonInviteClientTransaction, "E")])
def test_stale_retransmission_timer_on_reliable_client_is_ignored(cls, timer):
    tx = cls(make_request("INVITE" if cls is InviteClientTransaction else "OPTIONS"),
             reliable=True)
    tx.start()
    assert tx.on_timer(timer) == []


def test_stale_timer_g_on_reliable_server_is_ignored():
    tx, d, invite = invite_server(True)
    d.apply(tx.send_response(make_response(invite, 486)))
    assert tx.on_timer("G") == []
    assert tx.state is State.COMPLETED


@pytest.mark.parametrize("cls", [InviteClientTransaction, InviteServerTransaction,
                                 NonInviteClientTransaction, NonInviteServerTransaction])
def test_state_tables_are_closed(cls):
    table = cls._TABLE
    assert not any(state is State.TERMINATED for state, _ in table), "Terminated is final"
    sources = {state for state, _ in table}
    targets = {nxt for nxt, _ in table.values()}
    assert cls._INITIAL in sources
    assert State.TERMINATED in targets
    # every non-initial state is entered by some transition
    assert sources - {cls._INITIAL} <= targets


def test_transactions_are_slotted():
    for tx in (invite_client()[0], invite_server()[0], noninvite_client()[0],
               noninvite_server()[0]):
        assert not hasattr(tx, "__dict__")
    assert not hasattr(Transmit(make_request()), "__dict__")
