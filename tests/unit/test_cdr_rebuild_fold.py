"""Archive → rebuild gives the live processor's CDRs (property test).

The live side is the processor's real step (cdr/processor.py ``_step``, no
faust: its table and producer are the dicts it fills) fed a call's events in
publish order with redeliveries, the broker confirming rows at once and the
silence timer closing what is left; the rebuild side is what the archive
gives the rebuild: one copy per event id, ordered by (ts_ms, id), folded by
``fold.rebuild_call``."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cdr_pipeline import call_events
from cdr import fold
from cdr.processor import CdrProcessor, Slot, Stats, after_confirm, closed_rows
from proxy.contract import events as ev
from proxy.contract.callfold import silence_end_ms

T0 = 1_767_225_600_000
WINDOW_MS = 3_600_000
SHAPES = ("answered_caller_bye", "answered_callee_bye", "timeout", "teardown", "media_timeout",
          "session_expired", "busy", "credit", "cancel", "no_answer", "forked", "failover", "not_found")


def live_rows(events: list) -> list:
    """The rows the processor publishes last for this call (the sink keeps the newest)."""
    proc = CdrProcessor.__new__(CdrProcessor)
    proc.stats = Stats()
    proc.window_ms = WINDOW_MS
    slot: Slot | None = None
    rows: list = []
    for event in events:
        key = event.call_id.encode()
        working: dict[bytes, Slot] = {}
        finished: list = []
        proc._step(key, slot, event, 0, event.ts_ms, working, finished)
        slot = working.get(key, slot)
        for _, done_slot, published in finished:
            rows = published
            slot = after_confirm(done_slot, event.ts_ms)     # the broker confirmed at once
    if slot is not None and not slot.done:                     # the silence timer
        rows = closed_rows(Slot(0, 0, slot.state, True, silence_end_ms(slot.state, WINDOW_MS))) or []
    return rows


def archive_order(events: list) -> list:
    unique = {e.id: e for e in events}
    return sorted(unique.values(), key=lambda e: (e.ts_ms, e.id))


@st.composite
def call(draw):
    shape = draw(st.sampled_from(SHAPES))
    scale = draw(st.sampled_from([0.01, 0.3, 1.0]))
    talk = draw(st.integers(1_000, 600_000))
    events = call_events(shape, f"p{draw(st.integers(0, 10**9))}@test", T0, scale=scale, talk_ms=talk)
    # lost ends (closed for silence), a late gap (silence then a straggler), redeliveries
    if draw(st.booleans()):
        events = events[:draw(st.integers(1, len(events)))]
    if len(events) > 1 and draw(st.integers(0, 4)) == 0:
        cut = draw(st.integers(1, len(events) - 1))
        late = [ev.decode(ev.encode(e)) for e in events[cut:]]
        events = events[:cut] + [type(e)(**{**{f: getattr(e, f) for f in e.__struct_fields__},
                                             "ts_ms": e.ts_ms + 2 * WINDOW_MS}) for e in late]
    redelivered = draw(st.lists(st.integers(0, len(events) - 1), max_size=4))
    for index in redelivered:
        position = draw(st.integers(index + 1, len(events)))
        events = events[:position] + [events[index]] + events[position:]
    return events


@settings(max_examples=300, deadline=None)
@given(call())
def test_rebuild_from_the_archive_gives_the_live_cdrs(events):
    rebuilt = fold.rebuild_call(archive_order(events), WINDOW_MS, now_ms=events[-1].ts_ms + 10 * WINDOW_MS)
    assert (rebuilt or []) == live_rows(events)


def test_a_call_still_live_is_not_rebuilt():
    events = call_events("answered_caller_bye", "live@test", T0)[:-1]     # no BYE yet
    assert fold.rebuild_call(events, WINDOW_MS, now_ms=events[-1].ts_ms + 1000) is None
    closed = fold.rebuild_call(events, WINDOW_MS, now_ms=events[-1].ts_ms + 10 * WINDOW_MS)
    assert closed and closed[0].hangup_by == "silence"


def test_media_after_the_silence_deadline_counts_once_live_and_rebuilt():
    """A call answered, then silent past its window; its media.stats comes late
    and is redelivered.  The first copy closes the call for silence and still
    brings its media (as it would after the timer's close); the second copy
    changes nothing, and the rebuild, which sees one copy, agrees."""
    events = call_events("media_timeout", "late-media@test", T0, scale=0.01, talk_ms=20_000)
    first_media = next(i for i, e in enumerate(events) if isinstance(e, ev.MediaStats))
    late = [type(e)(**{**{f: getattr(e, f) for f in e.__struct_fields__}, "ts_ms": e.ts_ms + 2 * WINDOW_MS})
            for e in events[first_media:]]
    events = events[:first_media] + late[:1] + late     # the media.stats twice
    live = live_rows(events)
    assert live and live[0].hangup_by == "silence"
    assert live[0].caller_rtp_packets > 0               # the late media counted
    rebuilt = fold.rebuild_call(archive_order(events), WINDOW_MS, now_ms=events[-1].ts_ms + 10 * WINDOW_MS)
    assert rebuilt == live
