"""Property tests: random input sequences against the four transaction machines.

Responses with random codes, request retransmissions, ACKs, stray and due
timer firings and transport errors, in any order.  Invariants: nothing
raises (except a refused TU response, which must leave the state alone),
nothing follows Terminated, every machine terminates once its final timers
run, a client passes up one final outcome, a server only ever transmits
responses its TU gave it.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.transactions import (
    TRANSPORT_FAILED,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    TimerConfig,
    TransactionStateError,
    Transmit,
)
from tests.harness.transactions import Driver, make_ack, make_request, make_response

STATUSES = [100, 180, 183, 200, 202, 300, 302, 404, 408, 486, 487, 500, 503, 603]
TIMER_NAMES = list("ABDEFGHIJKLM")
CONFIGS = st.sampled_from([TimerConfig(), TimerConfig(t1=0.1, t2=0.4, t4=1.0),
                           TimerConfig(t1=1.0, t2=8.0, t4=6.0)])

common_inputs = [
    st.tuples(st.just("timer"), st.sampled_from(TIMER_NAMES)),   # stray or due, unannounced
    st.just(("run_next",)),                                       # the runtime fires the next timer
    st.just(("transport_error",)),
]
client_inputs = st.one_of(st.tuples(st.just("response"), st.sampled_from(STATUSES)),
                          *common_inputs)
server_inputs = st.one_of(st.tuples(st.just("send"), st.sampled_from(STATUSES)),
                          st.just(("retransmit",)), st.just(("ack",)), *common_inputs)


def _common(d: Driver, tx, step) -> bool:
    kind = step[0]
    if kind == "timer":
        d.apply(tx.on_timer(step[1]))
    elif kind == "run_next":
        if d.timers:
            d.fire_next()
    elif kind == "transport_error":
        d.apply(tx.on_transport_error())
    else:
        return False
    return True


def _check_retransmission_schedule(d: Driver, cfg: TimerConfig, reliable: bool) -> None:
    for name in "AEG":
        delays = [s.delay for s in d.started if s.name == name]
        if reliable:
            assert not delays, f"Timer {name} on a reliable transport"
        elif name == "A":
            # uncapped doubling from T1 (RFC 3261 §17.1.1.2)
            assert delays == [cfg.t1 * 2 ** i for i in range(len(delays))]
        else:
            assert all(cfg.t1 <= x <= cfg.t2 for x in delays)


@settings(max_examples=400, deadline=None)
@given(invite=st.booleans(), reliable=st.booleans(), cfg=CONFIGS,
       steps=st.lists(client_inputs, max_size=40))
def test_client_transactions_under_random_input(invite, reliable, cfg, steps):
    request = make_request("INVITE" if invite else "OPTIONS")
    cls = InviteClientTransaction if invite else NonInviteClientTransaction
    tx = cls(request, reliable=reliable, timers=cfg)
    d = Driver(tx)
    d.apply(tx.start())
    for step in steps:
        if not _common(d, tx, step):
            d.apply(tx.on_response(make_response(request, step[1])))
        assert d.terminated == (tx.state is State.TERMINATED)
        # the client only ever transmits its request and its own ACK
        assert all(m is request or (invite and m is tx.ack) for _, m in d.transmitted)

    # A final response eventually comes (Proceeding has no timer of its own:
    # a proxy's Timer C leads to CANCEL and a 487); then the timers run out.
    if not tx.terminated:
        d.apply(tx.on_response(make_response(request, 487)))
    d.run()
    assert tx.state is State.TERMINATED and d.terminated and not d.timers

    passed = [m.status for m in d.passed_up]
    finals = [s for s in passed if s >= 200]
    if finals:
        after_first = passed[passed.index(finals[0]) + 1:]
        if invite and finals[0] < 300:
            assert all(200 <= s < 300 for s in after_first)     # RFC 6026 Accepted
        else:
            assert after_first == []                           # one final, nothing after
    # exactly one outcome reaches the TU: a final response, a timeout or a transport failure
    assert (1 if finals else 0) + len(d.outcomes) == 1
    if invite and finals and finals[0] >= 300:
        assert tx.ack is not None and tx.ack.cseq == (request.cseq[0], "ACK")
    _check_retransmission_schedule(d, cfg, reliable)


@settings(max_examples=400, deadline=None)
@given(invite=st.booleans(), reliable=st.booleans(), cfg=CONFIGS,
       steps=st.lists(server_inputs, max_size=40))
def test_server_transactions_under_random_input(invite, reliable, cfg, steps):
    request = make_request("INVITE" if invite else "REGISTER")
    cls = InviteServerTransaction if invite else NonInviteServerTransaction
    tx = cls(request, reliable=reliable, timers=cfg)
    d = Driver(tx)
    sent_by_tu: set[int] = set()
    final_sent = None

    def send(status):
        nonlocal final_sent
        response = make_response(request, status)
        before = tx.state
        allowed = before in (State.TRYING, State.PROCEEDING) or (
            before is State.ACCEPTED and 200 <= status < 300)
        try:
            actions = tx.send_response(response)
        except TransactionStateError:
            assert not allowed, f"{status} refused in {before}"
            assert tx.state is before
            return
        assert allowed, f"{status} accepted in {before}"
        sent_by_tu.add(id(response))
        assert actions[0] == Transmit(response)
        if status >= 200 and final_sent is None:
            final_sent = status
        d.apply(actions)

    for step in steps:
        kind = step[0]
        if kind == "send":
            send(step[1])
        elif kind == "retransmit":
            d.apply(tx.on_request(request))
        elif kind == "ack":
            d.apply(tx.on_request(make_ack(request)))
        else:
            _common(d, tx, step)
        assert d.terminated == (tx.state is State.TERMINATED)
        assert all(id(m) in sent_by_tu for _, m in d.transmitted)
        # Only a 2xx's ACK goes up (RFC 6026 Accepted); a non-2xx's ACK stays here.
        assert all(m.method == "ACK" for m in d.passed_up)
        assert not d.passed_up or (invite and final_sent is not None and final_sent < 300)

    if tx.state in (State.TRYING, State.PROCEEDING):
        send(500)                                  # the TU answers in the end
    d.run()                                        # no ACK: Timer H ends Completed
    assert tx.state is State.TERMINATED and d.terminated and not d.timers
    if final_sent is not None and final_sent < 300 and invite:
        # RFC 6026 §7.1: each transport error in Accepted is reported; the
        # transaction lives on until Timer L.
        assert all(o == TRANSPORT_FAILED for o in d.outcomes)
    else:
        assert len(d.outcomes) <= 1
    _check_retransmission_schedule(d, cfg, reliable)
