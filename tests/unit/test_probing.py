"""Gateway probing: the OPTIONS health state machine (sans-I/O)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.routing.drouting import Gateway
from proxy.routing.probing import TRANSITIONS, GatewayProber, Health, Outcome, StateChange


def gw(name, probe="always", host="192.0.2.1"):
    return Gateway(name, host, 5060, probe=probe)


def prober(*gateways, **kw):
    kw.setdefault("interval", 10.0)
    return GatewayProber(gateways or [gw("a")], **kw)


def names(gateways):
    return [g.name for g in gateways]


def test_the_table_covers_every_state_and_outcome():
    assert set(TRANSITIONS) == {(s, o) for s in Health for o in Outcome}


def test_always_probed_gateways_start_up_and_are_probed_every_interval():
    p = prober(gw("a"), gw("b"))
    assert p.is_up("a") and p.is_up("b")
    assert names(p.due(0.0)) == ["a", "b"]
    assert p.due(1.0) == []                                   # outstanding probes are not repeated
    p.on_reply("a", 200, 0.1)
    p.on_reply("b", 200, 0.1)
    assert p.due(9.9) == []
    assert names(p.due(10.0)) == ["a", "b"]


def test_failures_take_a_gateway_down_and_answers_bring_it_back():
    p = prober(failures_to_down=2, successes_to_up=2)
    p.due(0)
    assert p.on_reply("a", 503, 1) is None and p.is_up("a")
    p.due(10)
    change = p.on_timeout("a", 11)
    assert change == StateChange("a", Health.UP, Health.DOWN, "2 probe(s) failed (last: no answer)", 11)
    assert not p.is_up("a")
    p.due(20)
    assert p.on_reply("a", 200, 21) is None and not p.is_up("a")
    p.due(30)
    change = p.on_reply("a", 404, 31)
    assert (change.old, change.new) == (Health.DOWN, Health.UP) and "404" in change.reason
    assert p.pop_changes() == [StateChange("a", Health.UP, Health.DOWN, "2 probe(s) failed (last: no answer)", 11),
                               change]
    assert p.pop_changes() == []


def test_an_answer_in_between_resets_the_failure_count():
    p = prober(failures_to_down=2)
    for t, status in enumerate([503, 200, 503, 200, 408]):
        p.due(t * 10)
        p.on_reply("a", status, t * 10 + 1)
    assert p.is_up("a")
    p.due(100)
    p.on_reply("a", 408, 101)
    assert not p.is_up("a")


@pytest.mark.parametrize("status", [200, 404, 483, 486, 500, 501, 600])
def test_any_final_response_but_the_failure_codes_means_alive(status):
    p = prober(failures_to_down=1)
    p.due(0)
    p.on_reply("a", status, 1)
    assert p.is_up("a")


def test_failure_codes_are_configurable():
    p = prober(failures_to_down=1, failure_codes={500})
    p.due(0)
    p.on_reply("a", 503, 1)
    assert p.is_up("a")
    p.due(10)
    p.on_reply("a", 500, 11)
    assert not p.is_up("a")


def test_provisional_and_unexpected_replies_change_nothing():
    p = prober(failures_to_down=1)
    assert p.on_reply("a", 503, 0) is None and p.is_up("a")        # no probe outstanding
    assert p.on_reply("zzz", 503, 0) is None and p.on_timeout("zzz", 0) is None
    p.due(0)
    assert p.on_reply("a", 100, 1) is None
    assert p.status()[0].probing
    assert p.on_reply("a", 503, 2) is not None


def test_a_probe_never_reported_times_out_on_its_own():
    p = prober(failures_to_down=1, probe_timeout=5.0)
    p.due(0)
    assert names(p.due(4.9)) == [] and p.is_up("a")
    p.due(5.0)
    assert not p.is_up("a")
    assert p.pop_changes()[0].reason == "1 probe(s) failed (last: no answer)"


def test_when_down_gateways_are_probed_only_while_down():
    p = prober(gw("a", "when-down"), successes_to_up=1)
    assert p.due(0) == [] and p.due(100) == []
    change = p.mark_down("a", 100, "503 on a call")
    assert change.reason == "marked down: 503 on a call" and not p.is_up("a")
    assert p.due(105) == []                                   # a moment before probing it back
    assert names(p.due(110)) == ["a"]
    p.on_reply("a", 200, 111)
    assert p.is_up("a")
    assert p.due(500) == []


def test_never_probed_gateways_are_not_tracked_and_always_up():
    p = prober(gw("a", "never"), gw("b"))
    assert names(p.due(0)) == ["b"]
    assert p.mark_down("a", 1) is None and p.is_up("a")
    assert [s.gateway for s in p.status()] == ["b"]


def test_mark_down_while_down_restarts_the_recovery_count():
    p = prober(successes_to_up=2)
    p.mark_down("a", 0)
    p.due(10)
    p.on_reply("a", 200, 11)
    p.mark_down("a", 12)
    p.due(22)
    p.on_reply("a", 200, 23)
    assert not p.is_up("a")
    p.due(33)
    p.on_reply("a", 200, 34)
    assert p.is_up("a")


def test_reload_keeps_state_of_unchanged_gateways_and_forgets_the_others():
    p = prober(gw("a"), gw("b"), gw("c"), failures_to_down=1)
    p.due(0)
    for name in "abc":
        p.on_reply(name, 503, 1)
    p.pop_changes()
    p.set_gateways([gw("a"), gw("b", host="192.0.2.99"), gw("d")], now=5)
    assert not p.is_up("a")                                   # same gateway: still down
    assert p.is_up("b")                                       # moved: starts afresh
    assert p.is_up("c") and p.is_up("d")                      # removed / new
    assert [(c.gateway, c.new) for c in p.pop_changes()] == [("b", Health.UP), ("c", Health.UP)]


def test_status_exposes_the_table():
    p = prober(failures_to_down=3)
    p.due(0)
    p.on_reply("a", 503, 1)
    (s,) = p.status()
    assert (s.gateway, s.state, s.streak, s.probing, s.last_status, s.last_probe_at) == \
        ("a", Health.UP, 1, False, 503, 0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        GatewayProber([], interval=0)
    with pytest.raises(ValueError):
        GatewayProber([], failures_to_down=0)


# -- any sequence keeps a consistent state ----------------------------------------------------------

NAMES = ["a", "b", "c"]
OPS = st.lists(st.tuples(
    st.sampled_from(["due", "reply", "timeout", "mark_down", "reload"]),
    st.sampled_from(NAMES),
    st.sampled_from([100, 180, 200, 404, 408, 486, 500, 503, 603]),
    st.floats(min_value=0.0, max_value=40.0),
    st.sampled_from(["always", "when-down", "never"]),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(1, 3), st.integers(1, 3))
def test_any_sequence_of_events_keeps_a_consistent_state(ops, to_down, to_up):
    modes = {"a": "always", "b": "when-down", "c": "never"}
    p = GatewayProber([gw(n, m) for n, m in modes.items()], interval=10.0,
                      failures_to_down=to_down, successes_to_up=to_up, probe_timeout=30.0)
    # a plain reference model: state, consecutive count, probe outstanding since
    model = {n: [Health.UP, 0, None] for n in NAMES}
    now = 0.0

    def outcome(name, failed, what_now):
        state, streak, _ = model[name]
        model[name][2] = None
        if state is Health.UP and failed or state is Health.DOWN and not failed:
            streak += 1
            if streak >= (to_down if state is Health.UP else to_up):
                model[name][:2] = [Health.DOWN if state is Health.UP else Health.UP, 0]
                return
            model[name][1] = streak
        else:
            model[name][1] = 0

    seen_state = {n: Health.UP for n in NAMES}
    for op, name, status, step, mode in ops:
        now += step
        if op == "due":
            for n in NAMES:                                   # stale probes time out first
                if model[n][2] is not None and now - model[n][2] >= 30.0:
                    outcome(n, True, now)
            sent = names(p.due(now))
            for n in sent:
                assert model[n][2] is None, "a probe was sent while one is outstanding"
                assert modes[n] != "never"
                assert modes[n] == "always" or model[n][0] is Health.DOWN
                model[n][2] = now
        elif op == "reply":
            p.on_reply(name, status, now)
            if model[name][2] is not None and modes[name] != "never" and status >= 200:
                outcome(name, status in (408, 503), now)
        elif op == "timeout":
            p.on_timeout(name, now)
            if model[name][2] is not None and modes[name] != "never":
                outcome(name, True, now)
        elif op == "mark_down":
            p.mark_down(name, now)
            if modes[name] != "never":
                model[name][:2] = [Health.DOWN, 0]
        else:                                                 # a reload changing one gateway's mode
            if modes[name] != mode:
                modes[name] = mode
                model[name] = [Health.UP, 0, None]
            p.set_gateways([gw(n, m) for n, m in modes.items()], now)

        for change in p.pop_changes():
            assert change.old is seen_state[change.gateway] and change.new is not change.old
            seen_state[change.gateway] = change.new
        for n in NAMES:
            assert p.is_up(n) == (model[n][0] is Health.UP), (n, model[n])
            assert seen_state[n] is model[n][0]
        for s in p.status():
            assert modes[s.gateway] != "never"
            assert s.streak == model[s.gateway][1]
            assert s.streak < (to_down if s.state is Health.UP else to_up)
            assert s.probing == (model[s.gateway][2] is not None)
