"""The CDR processor's step (cdr/processor.py) without faust or a broker: a
relayed call's media.stats that comes after its end, and events that are not
calls.  The agent's table and producer are replaced by the dicts ``_step`` fills."""
from __future__ import annotations

from bench.cdr_pipeline import CallBuilder
from cdr.processor import MEDIA_GRACE_MS, CdrProcessor, Slot, Stats, after_confirm, media_grace_over
from proxy.contract import events as ev

T0 = 1_767_225_600_000
KEY = b"lm@test"


def processor() -> CdrProcessor:
    proc = CdrProcessor.__new__(CdrProcessor)       # the step needs no app, only these
    proc.stats = Stats()
    proc.window_ms = 3_600_000
    return proc


def step(proc: CdrProcessor, slot: Slot | None, event, now: int):
    working: dict[bytes, Slot] = {}
    finished: list = []
    proc._step(event.call_id.encode(), slot, event, 0, now, working, finished)
    return working.get(event.call_id.encode(), slot), finished


def test_media_stats_after_the_bye_publish_the_rows_again_with_the_media():
    proc = processor()
    c = CallBuilder("lm@test", T0, from_tag="ft1")
    c.at(0).invite()
    c.at(1).route(0)
    c.at(2000).answer(0)
    c.at(2010).ack(0)
    c.at(30_000).bye("caller")
    slot = None
    for event in c.events:
        slot, finished = step(proc, slot, event, T0 + 30_000)
    assert slot is not None and slot.done and len(finished) == 1
    (first,) = finished[0][2]
    assert (first.media_relay, first.caller_rtp_packets) == ("", 0)
    slot = after_confirm(slot, T0 + 30_010)           # the broker confirmed the rows
    assert slot.confirmed and slot.state is not None
    stats = c.at(30_002).media_stats(0, caller=ev.MediaFlow(packets=1400, bytes=240_800, last_packet_ms=T0 + 29_990),
                                     callee=ev.MediaFlow(packets=1390, bytes=239_080, last_packet_ms=T0 + 29_995))
    again, finished = step(proc, slot, stats, T0 + 30_020)
    (row,) = finished[0][2]
    assert (row.cdr_id, row.leg, row.end_ms, row.duration_ms) == (first.cdr_id, 0, first.end_ms, first.duration_ms)
    assert (row.media_relay, row.caller_rtp_packets, row.callee_rtp_packets, row.last_media_ms) == (
        "udp:127.0.0.1:2223", 1400, 1390, T0 + 29_995)
    assert proc.stats.counts["media_after_end"] == 1 and proc.stats.counts["calls"] == 1
    # the same stats again change nothing; after the grace only a marker is left
    confirmed = after_confirm(again, T0 + 30_030)
    assert step(proc, confirmed, stats, T0 + 30_040) == (confirmed, [])
    assert not media_grace_over(confirmed, T0 + 30_030 + MEDIA_GRACE_MS)
    assert media_grace_over(confirmed, T0 + 30_031 + MEDIA_GRACE_MS)
    marker = Slot(0, T0 + 40_100, None, True)
    assert step(proc, marker, stats, T0 + 40_100) == (marker, [])
    assert proc.stats.counts["media_too_late"] == 1


def test_an_unanswered_call_becomes_a_marker_at_once():
    c = CallBuilder("na@test", T0, from_tag="ft1")
    c.at(0).invite()
    c.at(1).route(0)
    c.at(900).leg_failed(0, 486, "Busy Here")
    c.at(901).failed(486, "Busy Here")
    proc, slot = processor(), None
    for event in c.events:
        slot, _ = step(proc, slot, event, T0 + 1000)
    assert after_confirm(slot, T0 + 1001) == Slot(0, T0 + 1001, None, True)


def test_a_dropped_binding_creates_no_call_state():
    import asyncio
    from types import SimpleNamespace

    proc = processor()
    proc.table = SimpleNamespace(data={})
    puts: dict = {}

    proc._put_many = puts.update                       # the batch's table writes
    dropped = ev.BindingDropped(id="d1", ts_ms=T0, call_id="reg@t", from_tag="", proxy="node-a",
                                aor="sip:bob@example.test", contact="sip:bob@192.168.1.20",
                                reason="keepalive_timeout", failures=3)
    invite = CallBuilder("c@t", T0).at(0).invite()
    batch = [SimpleNamespace(message=SimpleNamespace(value=ev.encode(e), topic="sip.events", partition=0, offset=n))
             for n, e in enumerate([dropped, invite])]
    asyncio.run(proc.handle_batch(batch))
    assert list(puts) == [b"c@t"]                     # the call's state only
    assert (proc.stats.counts["not_a_call"], proc.stats.counts["events"]) == (1, 1)
