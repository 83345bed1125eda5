"""RADIUS accounting records (radius/records.py): which records a call needs,
their attributes, cause mappings, session ids, Acct-Delay-Time; the spool's
keys (radius/queue.py) and the settings (proxy/infra/config.py)."""
from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from pyrad import packet as rpacket
from pyrad.dictionary import Dictionary

from bench.cdr_pipeline import CallBuilder, call_events
from proxy.contract.callfold import fold
from radius import DICTIONARY
from radius import records as rr
from radius.queue import Spool, WireEncoder, request_packet
from radius.records import (
    FAILED,
    INTERIM,
    START,
    STOP,
    Context,
    Progress,
    cisco_time,
    delay_seconds,
    interim,
    plan,
    q850_cause,
    record_key,
    session_id,
    terminate_cause,
    uri_user_host,
    with_delay,
)

T0 = 1_767_225_600_000          # 2026-01-01 00:00:00 UTC (a Thursday)
CTX = Context(nas_ip="192.0.2.1", nas_identifier="node-a")
CTX_FAILED = msgspec.structs.replace(CTX, send_failed=True)


def answered_call(call_id: str = "c1@test", talk_ms: int = 60_500, end: str = "caller", **kw):
    c = CallBuilder(call_id, T0, from_tag="ft1", proxy="node-a", **kw)
    c.at(0).invite()
    c.at(3).route(0)
    c.at(180).progress(0)
    c.at(3000).answer(0)
    c.at(3010).ack(0)
    at = c.at(3000 + talk_ms)
    if end in ("caller", "callee"):
        at.bye(end)
    elif end == "timeout":
        at.timeout(talk_ms // 1000, T0 + 3000)
    elif end == "teardown":
        at.teardown("credit exhausted")
    elif end == "session_timer":
        at.session_expired(talk_ms // 1000, T0 + 3000)
    return c


def attrs(record) -> dict:
    """Attribute name -> value, or list of values when repeated."""
    out: dict = {}
    for name, value in record.attrs:
        if name in out:
            out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
        else:
            out[name] = value
    return out


def run(events, ctx=CTX, progress=Progress()):
    return plan(fold(events), progress, ctx)


# --- session ids and keys -------------------------------------------------------------

def test_session_ids_are_stable_per_call_and_leg():
    assert session_id("abc@host", 0) == "abc@host;leg=0"
    assert session_id("abc@host", 2) == "abc@host;leg=2"
    assert session_id("abc@host", 2, "opensips") == "abc@host"
    assert session_id("abc@host", 1) == session_id("abc@host", 1)


def test_long_call_ids_fit_a_radius_string_and_stay_distinct():
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    sa, sb = session_id(a, 0), session_id(b, 0)
    assert len(sa.encode()) <= 253 and len(sb.encode()) <= 253
    assert sa != sb and sa == session_id(a, 0)


def test_record_keys_name_session_status_and_interim_number():
    assert record_key("s", START) == "1:0:s"
    assert record_key("s", INTERIM, 4) == "3:4:s"
    assert len({record_key("s", st) for st in (START, STOP, FAILED)}) == 3


# --- mappings -------------------------------------------------------------------------

@pytest.mark.parametrize("hangup_by, cause", [
    ("caller", 1), ("callee", 1),       # User-Request
    ("timeout", 5),                     # Session-Timeout
    ("teardown", 6),                    # Admin-Reset
    ("silence", 3),                     # Lost-Service
    ("media_timeout", 2),               # Lost-Carrier
    ("session_timer", 3),               # Lost-Service
])
def test_terminate_cause(hangup_by, cause):
    assert terminate_cause(hangup_by) == cause


@pytest.mark.parametrize("code, cause", [
    (200, 16), (404, 1), (403, 21), (408, 102), (480, 18), (484, 28), (486, 17),
    (487, 16), (500, 41), (502, 38), (503, 41), (504, 102), (600, 17), (603, 21), (604, 1),
    (499, 41), (599, 41), (699, 17),    # unknown codes: as the class's x00 (RFC 3398)
    (0, 41),
])
def test_sip_to_q850(code, cause):
    assert q850_cause(code) == cause


def test_cisco_time_format():
    assert cisco_time(T0 + 3_723_045) == "01:02:03.045 UTC Thu Jan 1 2026"
    assert cisco_time(1_795_852_800_000) == "08:00:00.000 UTC Sat Nov 28 2026"


@pytest.mark.parametrize("uri, expected", [
    ("sip:alice@example.test", "alice@example.test"),
    ('"Alice" <sip:alice@example.test:5061;transport=tcp>;tag=1', "alice@example.test"),
    ("sips:bob@[2001:db8::1]:5061", "bob@[2001:db8::1]"),
    ("tel:+4930123", "+4930123"),
])
def test_uri_user_host(uri, expected):
    assert uri_user_host(uri) == expected


# --- Start / Stop ---------------------------------------------------------------------

def test_answered_call_start_then_stop_with_values():
    c = answered_call()
    records, progress = run(c.events[:5])               # answered, talking
    assert progress == Progress(start=True)
    (start,) = records
    assert (start.status, start.session, start.key) == (START, "c1@test;leg=0", "1:0:c1@test;leg=0")
    a = attrs(start)
    assert a["Acct-Status-Type"] == 1 and a["Acct-Session-Id"] == "c1@test;leg=0"
    assert a["Acct-Multi-Session-Id"] == "c1@test"
    assert a["User-Name"] == "alice@example.test"
    assert a["Calling-Station-Id"] == "sip:alice@example.test"
    assert a["Called-Station-Id"] == "sip:+4930123456@example.test"
    assert (a["NAS-IP-Address"], a["NAS-Identifier"]) == ("192.0.2.1", "node-a")
    assert a["Event-Timestamp"] == (T0 + 3000) // 1000
    assert "Acct-Session-Time" not in a and "Acct-Terminate-Cause" not in a
    assert (a["Service-Type"], a["Sip-Method"], a["Sip-Response-Code"]) == (15, 1, 200)
    assert (a["Sip-From-Tag"], a["Sip-To-Tag"]) == ("ft1", "tt0")
    assert (a["Sip-Call-Setuptime"], a["Sip-Call-Created"]) == (3, T0 // 1000)
    assert a["Sip-Translated-Request-URI"] == "sip:+4930123456@198.51.100.7:5060"
    assert a["h323-setup-time"] == "h323-setup-time=00:00:00.000 UTC Thu Jan 1 2026"
    assert a["h323-connect-time"] == "h323-connect-time=00:00:03.000 UTC Thu Jan 1 2026"
    assert "h323-disconnect-time" not in a
    assert a["Cisco-AVPair"] == "call-id=c1@test"
    assert "Acct-Delay-Time" not in a                   # added by the sender

    records, progress = run(c.events, progress=progress)   # BYE
    assert progress == Progress(start=True, final=True)
    (stop,) = records
    s = attrs(stop)
    assert (stop.status, stop.session) == (STOP, "c1@test;leg=0")
    assert s["Event-Timestamp"] == (T0 + 63_500) // 1000
    assert s["Acct-Session-Time"] == 61                  # 60.5 s, rounded up (billable_s)
    assert s["Acct-Terminate-Cause"] == 1                # User-Request
    assert (s["Sip-Method"], s["Sip-Response-Code"]) == (8, 200)
    assert (s["Sip-Call-Duration"], s["Sip-Call-MSDuration"]) == (61, 60_500)
    assert (s["Sip-Call-Setuptime"], s["Sip-Call-Created"]) == (3, T0 // 1000)
    assert s["h323-disconnect-time"] == "h323-disconnect-time=00:01:03.500 UTC Thu Jan 1 2026"
    assert s["h323-disconnect-cause"] == "h323-disconnect-cause=10"    # Q.850 16, hex


def test_whole_call_at_once_gives_start_and_stop_in_order():
    records, progress = run(answered_call().events)
    assert [r.status for r in records] == [START, STOP]
    assert progress.final


@pytest.mark.parametrize("end, cause", [("callee", 1), ("timeout", 5), ("teardown", 6), ("session_timer", 3)])
def test_stop_terminate_cause_per_end(end, cause):
    records, _ = run(answered_call(end=end, talk_ms=30_000).events)
    stop = records[-1]
    assert stop.status == STOP and attrs(stop)["Acct-Terminate-Cause"] == cause
    assert attrs(stop)["Acct-Session-Time"] == 30


def test_bye_reason_q850_cause_is_the_disconnect_cause():
    c = CallBuilder("c2@test", T0, from_tag="ft1")
    c.at(0).invite(); c.at(1).route(0); c.at(2000).answer(0)
    c.at(12_000).bye("callee", reason="Q.850;cause=17;text=\"busy\"")
    stop = run(c.events)[0][-1]
    assert attrs(stop)["h323-disconnect-cause"] == "h323-disconnect-cause=11"


def test_silence_close_is_a_stop_with_lost_service():
    c = answered_call()
    state = fold(c.events[:5])
    records, progress = plan(state, Progress(start=True), CTX, silence_end_ms=T0 + 100_000)
    (stop,) = records
    a = attrs(stop)
    assert a["Acct-Terminate-Cause"] == 3 and a["Acct-Session-Time"] == 97
    assert a["h323-disconnect-cause"] == "h323-disconnect-cause=29"      # 41: temporary failure
    assert progress.final


def test_no_start_before_the_invite_is_known_and_start_before_stop_when_it_comes():
    c = answered_call()
    invite, rest = c.events[0], c.events[1:]
    records, progress = run(rest[:4])                     # answered, invite missing
    assert records == [] and progress == Progress()
    records, progress = run(rest + [invite], progress=progress)
    assert [r.status for r in records] == [START, STOP]


def test_replay_builds_identical_records():
    events = answered_call().events
    first, _ = run(events)
    again, _ = run(events + events)                       # duplicates change nothing
    assert first == again
    assert run(events, progress=Progress(start=True, final=True)) == ([], Progress(start=True, final=True))


# --- Failed -----------------------------------------------------------------------------

def test_unanswered_call_sends_nothing_unless_failed_is_enabled():
    events = call_events("busy", "b1@test", T0)
    records, progress = run(events)
    assert records == [] and progress.final
    records, _ = run(events, CTX_FAILED)
    (failed,) = records
    a = attrs(failed)
    assert (failed.status, failed.session) == (FAILED, "b1@test;leg=0")
    assert (a["Acct-Status-Type"], a["Sip-Method"], a["Sip-Response-Code"]) == (15, 1, 486)
    assert "Acct-Session-Time" not in a and "Acct-Terminate-Cause" not in a
    assert "h323-connect-time" not in a
    assert a["h323-disconnect-cause"] == "h323-disconnect-cause=11"      # 17 user busy
    assert a["Event-Timestamp"] == (T0 + 2000) // 1000


def test_refused_before_routing_is_one_failed_leg():
    (failed,), _ = run(call_events("not_found", "n1@test", T0), CTX_FAILED)
    assert attrs(failed)["Sip-Response-Code"] == 404
    assert attrs(failed)["h323-disconnect-cause"] == "h323-disconnect-cause=1"


def test_cancelled_call_maps_to_normal_clearing():
    (failed,), _ = run(call_events("cancel", "x1@test", T0), CTX_FAILED)
    assert attrs(failed)["Sip-Response-Code"] == 487
    assert attrs(failed)["h323-disconnect-cause"] == "h323-disconnect-cause=10"


# --- multi-leg --------------------------------------------------------------------------

def test_forked_call_per_leg_sessions():
    events = call_events("forked", "f1@test", T0)
    records, _ = run(events, CTX_FAILED)
    by = {(r.session, r.status) for r in records}
    assert by == {("f1@test;leg=1", START), ("f1@test;leg=1", STOP), ("f1@test;leg=0", FAILED)}
    failed = next(r for r in records if r.status == FAILED)
    assert attrs(failed)["Sip-Response-Code"] == 487
    assert attrs(failed)["Sip-Translated-Request-URI"] == "sip:+4930123456@198.51.100.7:5060"
    start = next(r for r in records if r.status == START)
    assert attrs(start)["Sip-Translated-Request-URI"] == "sip:+4930123456@198.51.100.8:5060"
    assert records.index(start) < records.index(next(r for r in records if r.status == STOP))


def test_failover_call_opensips_layout_one_session_legs_repeated():
    ctx = msgspec.structs.replace(CTX_FAILED, multileg="opensips")
    records, _ = run(call_events("failover", "o1@test", T0), ctx)
    assert [(r.session, r.status) for r in records] == [("o1@test", START), ("o1@test", STOP)]
    stop = attrs(records[1])
    assert "Acct-Multi-Session-Id" not in stop
    assert stop["Sip-Translated-Request-URI"] == ["sip:+4930123456@198.51.100.7:5060",
                                                  "sip:+4930123456@198.51.100.9:5060"]
    legs = [v for v in stop["Cisco-AVPair"] if v.startswith("sipledger-leg=")]
    assert legs == ["sipledger-leg=0;parent=-1;cause=initial;code=503;disposition=failed",
                    "sipledger-leg=1;parent=0;cause=failover;code=200;disposition=answered"]
    assert stop["Sip-To-Tag"] == "tt1" and stop["Acct-Session-Time"] == 60


def test_opensips_layout_failed_call_is_one_record():
    ctx = msgspec.structs.replace(CTX_FAILED, multileg="opensips")
    (failed,), _ = run(call_events("busy", "o2@test", T0), ctx)
    assert (failed.session, failed.status) == ("o2@test", FAILED)
    assert attrs(failed)["Sip-Response-Code"] == 486


def test_attribute_families_can_be_switched_off():
    ctx = msgspec.structs.replace(CTX, opensips=False, cisco=False)
    records, _ = run(answered_call().events, ctx)
    for record in records:
        names = {name for name, _ in record.attrs}
        assert not any(n.startswith(("Sip-", "h323-", "Cisco-")) for n in names), names
        assert "Service-Type" not in names
        assert {"Acct-Session-Id", "User-Name", "Event-Timestamp"} <= names


def test_user_name_falls_back_to_the_from_user():
    c = answered_call(account=None, caller='"Bob" <sip:bob@example.test;user=phone>')
    start = run(c.events)[0][0]
    assert attrs(start)["User-Name"] == "bob@example.test"


# --- Interim-Update ---------------------------------------------------------------------

def test_interim_updates_every_interval_latest_only():
    ctx = msgspec.structs.replace(CTX, interim_ms=60_000)
    state = fold(answered_call().events[:5])             # answered at T0 + 3000
    records, progress = plan(state, Progress(), ctx)
    assert interim(state, progress, ctx, T0 + 3000 + 59_999) == ([], progress)
    (first,), progress = interim(state, progress, ctx, T0 + 3000 + 60_000)
    assert (first.status, first.key) == (INTERIM, "3:1:c1@test;leg=0")
    a = attrs(first)
    assert (a["Acct-Session-Time"], a["Event-Timestamp"]) == (60, (T0 + 63_000) // 1000)
    assert interim(state, progress, ctx, T0 + 3000 + 61_000) == ([], progress)
    (third,), progress = interim(state, progress, ctx, T0 + 3000 + 185_000)   # 2 missed: latest
    assert third.key == "3:3:c1@test;leg=0" and attrs(third)["Acct-Session-Time"] == 180
    assert progress.interims == 3


def test_no_interim_without_start_after_end_or_when_off():
    ctx = msgspec.structs.replace(CTX, interim_ms=1000)
    state = fold(answered_call().events[:5])
    assert interim(state, Progress(), ctx, T0 + 10_000)[0] == []                  # no Start yet
    assert interim(state, Progress(start=True, final=True), ctx, T0 + 10_000)[0] == []
    assert interim(state, Progress(start=True), CTX, T0 + 10_000)[0] == []       # interval 0


# --- Acct-Delay-Time and encoding ---------------------------------------------------------

def test_delay_time_is_whole_seconds_since_enqueued():
    assert delay_seconds(1000, 1000) == 0
    assert delay_seconds(1000, 1999) == 0
    assert delay_seconds(1000, 5000) == 4
    assert delay_seconds(5000, 1000) == 0                 # clock stepped back: never negative
    attrs_in = (("Acct-Status-Type", 1),)
    assert with_delay(attrs_in, 0, 125_400) == (("Acct-Status-Type", 1), ("Acct-Delay-Time", 125))


def _all_records(ctx) -> list:
    records = []
    for shape in ("answered_caller_bye", "forked", "failover", "busy", "cancel", "not_found",
                  "timeout", "teardown"):
        records += run(call_events(shape, f"{shape}@test", T0), ctx)[0]
    state = fold(answered_call().events[:5])
    records += interim(state, Progress(start=True), ctx, T0 + 10_000)[0]
    return records


@pytest.mark.parametrize("multileg", ["per-leg", "opensips"])
def test_wire_encoding_decodes_with_pyrad_as_pyrad_encodes_it(multileg):
    """The sender's encoder (radius/queue.py WireEncoder) against pyrad's own:
    pyrad decodes both to the same values, attribute by attribute, and the
    Request Authenticator verifies; the record's attribute order is kept."""
    dictionary = Dictionary(str(DICTIONARY))
    encoder = WireEncoder(dictionary)
    ctx = msgspec.structs.replace(CTX_FAILED, interim_ms=1000, multileg=multileg)
    for record in _all_records(ctx):
        raw = request_packet(7, encoder.encode(record.attrs), 2, b"s3cret")     # what the sender sends
        back = rpacket.AcctPacket(dict=dictionary, secret=b"s3cret", packet=raw)
        assert back.VerifyAcctRequest()
        theirs = rpacket.AcctPacket(dict=dictionary, secret=b"s3cret", id=7)
        for name, value in with_delay(record.attrs, 0, 2000):
            theirs.AddAttribute(name, value)
        theirs_back = rpacket.AcctPacket(dict=dictionary, secret=b"s3cret", packet=theirs.RequestPacket())
        assert {k: back[k] for k in back.keys()} == {k: theirs_back[k] for k in theirs_back.keys()}
        assert back["Acct-Session-Id"] == [record.session] and back["Acct-Delay-Time"] == [2]
        status = {1: "Start", 2: "Stop", 3: "Interim-Update", 15: "Failed"}[record.status]
        assert back["Acct-Status-Type"] == [status]
        if ("Sip-Method", 8) in record.attrs:
            assert back["Sip-Method"] == ["Bye"]
        assert back["Cisco-AVPair"][0].startswith("call-id=")
        # on the wire in the record's order (pyrad would group repeated attributes)
        codes, pos = [], 20
        while pos < len(raw):
            code, length = raw[pos], raw[pos + 1]
            codes.append((code, raw[pos + 6]) if code == 26 else (code, None))
            pos += length
        names = [dictionary.attributes[n] for n, _ in record.attrs]
        assert codes[:-1] == [(26, a.code) if a.vendor else (a.code, None) for a in names]


def test_a_resend_is_a_new_packet():
    dictionary = Dictionary(str(DICTIONARY))
    attrs = WireEncoder(dictionary).encode(run(answered_call().events)[0][0].attrs)
    first = request_packet(1, attrs, 0, b"s")
    again = request_packet(2, attrs, 3, b"s")
    assert first[1] == 1 and again[1] == 2                       # Identifier
    assert first[4:20] != again[4:20]                            # Request Authenticator
    assert rpacket.AcctPacket(dict=dictionary, packet=again)["Acct-Delay-Time"] == [3]


# --- the spool's keys ---------------------------------------------------------------------

def test_spool_enqueues_a_key_once_and_never_after_ack(tmp_path: Path):
    spool = Spool(tmp_path)
    records, _ = run(answered_call().events)
    added = spool.commit(records, now_ms=1000)
    assert [e.status for e in added] == [START, STOP] and added[0].seq < added[1].seq
    assert added[0].enqueued_ms == 1000 and added[0].attrs == records[0].attrs
    assert spool.commit(records) == []                     # queued already
    spool.ack(added[:1])
    assert [e.key for e in spool.pending()] == [records[1].key]
    assert spool.commit(records) == []                     # acknowledged: not again
    assert spool.prune_sent(before_ms=10**15) == 1
    assert [e.status for e in spool.commit(records)] == [START]   # retention over: queued again
    spool.close()


def test_spool_keeps_call_states_with_the_records_atomically(tmp_path: Path):
    spool = Spool(tmp_path)
    records, _ = run(answered_call().events)
    spool.commit(records, {"c1": b"state-1"}, now_ms=5)
    spool.commit([], {"c2": b"state-2"}, ["c1"])
    assert dict(spool.calls()) == {"c2": b"state-2"}
    spool.close()
    reopened = Spool(tmp_path)
    assert [e.enqueued_ms for e in reopened.pending()] == [5, 5]
    reopened.close()


def test_records_module_is_pure():
    source = Path(rr.__file__).read_text()
    for forbidden in ("import time", "import socket", "import asyncio", "sqlite3", "aiokafka",
                      "proxy.runtime", "proxy.infra", "proxy.core"):
        assert forbidden not in source
    # what it shares with the other processes is the contract alone
    imported = {line.split()[1] for line in source.splitlines() if line.startswith("from proxy")}
    assert imported <= {"proxy.contract.callfold", "proxy.contract.cdr"}, imported


# --- the worker's core (radius/worker.py Accounting, no I/O) --------------------------------

def _core(**ctx):
    from radius.worker import Accounting
    return Accounting(msgspec.structs.replace(CTX, **ctx), silence_ms=3_600_000, ttl_ms=600_000,
                      started_ms=T0)


def _feed(core, events, now_ms):
    records, changed = [], {}
    for event in events:
        core.event(event, 0, now_ms, records, changed)
    core.apply_changes(changed, [])
    return records, changed


def test_core_records_once_and_ignores_late_duplicates_until_the_marker_expires():
    core = _core()
    events = answered_call().events
    records, _ = _feed(core, events[:5], T0 + 5000)
    assert [r.status for r in records] == [START] and core.live == 1
    assert _feed(core, events[:5], T0 + 5000)[0] == []          # replayed: nothing new
    records, changed = _feed(core, events, T0 + 70_000)
    assert [r.status for r in records] == [STOP]
    assert core.live == 0 and list(core.finished) == ["c1@test"]
    assert changed["c1@test"].state is None
    assert _feed(core, events, T0 + 80_000)[0] == []           # late duplicates
    assert core.counts["after_finish"] >= len(events)
    forgotten = []
    core.tick(T0 + 70_000 + 600_001, [], {}, forgotten)
    assert forgotten == ["c1@test"]


def test_core_tick_sends_interims_and_closes_silent_calls():
    core = _core(interim_ms=60_000)
    c = answered_call()
    _feed(core, c.events[:5], T0 + 3000)
    records, changed, forgotten = [], {}, []
    core.tick(T0 + 3000 + 125_000, records, changed, forgotten)
    assert [(r.status, r.key) for r in records] == [(INTERIM, "3:2:c1@test;leg=0")]
    core.apply_changes(changed, forgotten)
    assert core.calls["c1@test"].progress.interims == 2
    records, changed = [], {}
    core.tick(T0 + 3000 + 125_500, records, changed, [])
    assert records == []                                        # nothing new due
    # silent for the window (3600 s after its cap of 3600 s): closed with a Stop
    records, changed = [], {}
    core.tick(T0 + 3000 + 3_600_000 + 3_600_001, records, changed, [])
    (stop,) = records
    assert attrs(stop)["Acct-Terminate-Cause"] == 3            # Lost-Service
    assert attrs(stop)["Acct-Session-Time"] == 3600            # at the cap, derived from the events


def test_media_timeout_stop_is_at_the_last_media_not_at_detection():
    c = answered_call(end="none")
    c.at(42_000).media_timeout(T0 + 13_400, silent="callee")     # detected 28.6 s after the media stopped
    records, progress = run(c.events)
    stop = records[-1]
    s = attrs(stop)
    assert progress.final and stop.status == STOP
    assert s["Event-Timestamp"] == (T0 + 13_400) // 1000
    assert (s["Acct-Session-Time"], s["Sip-Call-MSDuration"]) == (11, 10_400)    # answer at 3 s
    assert s["Acct-Terminate-Cause"] == 2                                         # Lost-Carrier
    assert s["h323-disconnect-cause"] == "h323-disconnect-cause=29"               # Q.850 41, hex
    assert s["h323-disconnect-time"] == "h323-disconnect-time=00:00:13.400 UTC Thu Jan 1 2026"


def test_core_skips_a_dropped_binding_without_call_state():
    from proxy.contract import events as ev
    core = _core()
    dropped = ev.BindingDropped(id="d1", ts_ms=T0, call_id="reg@t", from_tag="", proxy="node-a",
                                aor="sip:bob@example.test", contact="sip:bob@192.168.1.20",
                                reason="keepalive_timeout", failures=3)
    records, changed = _feed(core, [dropped], T0)
    assert (records, changed, core.live, core.counts["not_a_call"]) == ([], {}, 0, 1)
