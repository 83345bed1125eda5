"""``rows_ready``: the cheap question processors ask of every event
(proxy/contract/callfold.py) must answer exactly what ``finish(state, 0)``
would: rows or not."""
from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cdr_pipeline import SHAPES, CallBuilder, call_events
from proxy.contract.callfold import CallState, apply, finish, new_state, rows_ready

T0 = 1_767_225_600_000


def _extra(c: CallBuilder, kind: int, at: int) -> None:
    """Events the bench's shapes do not have: late media, caps, refused
    teardowns, cancels, answers and finals out of place."""
    c.at(at)
    [lambda: c.media_stats(None), lambda: c.media_stats(1), lambda: c.max_duration(5),
     lambda: c.max_duration(9, "unknown_call"), lambda: c.teardown("t", "unknown_call"),
     lambda: c.teardown("t"), lambda: c.cancel("r"), lambda: c.answer(1), lambda: c.failed(487, "x"),
     lambda: c.bye("proxy"), lambda: c.media_timeout(c.now - 5), lambda: c.session_expired(),
     lambda: c.route(2, parent=0, cause="forward"), lambda: c.leg_failed(2, 603, "Decline")][kind]()


@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from(SHAPES), data=st.data())
def test_rows_ready_is_finish_giving_rows(shape, data):
    events = call_events(shape, f"{shape}@t", T0, scale=data.draw(st.sampled_from([1.0, 0.01, 0.0])))
    extra = CallBuilder(f"{shape}@t", T0, from_tag=events[0].from_tag, proxy=events[0].proxy)
    for kind, at in data.draw(st.lists(st.tuples(st.integers(0, 13), st.integers(0, 90_000)), max_size=4)):
        _extra(extra, kind, at)
    events = events + extra.events
    events = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events), max_size=3))))
    state: CallState = new_state(f"{shape}@t")
    for event in events:
        state = apply(state, event)
        assert rows_ready(state) == (finish(state, 0) is not None)


def test_rows_ready_on_a_state_from_the_changelog():
    # a state decoded from its msgpack (what a restarted worker holds) answers the same
    for shape in SHAPES:
        events = call_events(shape, f"{shape}@t", T0)
        state = new_state(f"{shape}@t")
        for event in events:
            state = apply(state, event)
            decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=CallState)
            assert rows_ready(decoded) == rows_ready(state) == (finish(state, 0) is not None)
        assert rows_ready(state), shape          # every shape ends with its last event
