"""Hostile input must cost nothing: odd bytes, oversized headers, asserted reply
addresses and malformed values get a 4xx or silence, never a stuck transaction,
a traceback, a DNS lookup or a reply sent somewhere else."""
from __future__ import annotations

import logging

import pytest

from proxy.contract import events as ev
from proxy.core.ports import Target
from proxy.sip import via as via_module
from proxy.sip.message import ParseError, SipMessage, parse
from tests.harness.corefake import ALICE, BOB, CoreRig, invite, register, response_to, subscriber_rig

pytestmark = pytest.mark.clock


@pytest.fixture
def rig(tmp_path):
    return subscriber_rig(tmp_path, users=("alice",), auth=True)


@pytest.fixture
def open_rig(tmp_path):
    rig = CoreRig(tmp_path, auth=False)
    rig.store.add_domain("example.test")
    rig.store.add_user("alice", "example.test", "a-secret")
    rig.store.add_user("bob", "example.test", "b-secret")
    rig.reload()
    return rig


@pytest.fixture
def tracebacks(caplog):
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert [r for r in caplog.records if r.exc_info] == []


def receive_bytes(rig: CoreRig, data: bytes, source: Target = ALICE):
    rig.engine.on_data(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), source)
    return rig.effects.take()


# -- non-UTF-8 bytes ----------------------------------------------------------------------

def latin1_invite(call_id="latin-1") -> bytes:
    return invite(call_id=call_id).replace('"Alice"', '"Jos\xe9"').encode("latin-1")


def test_latin1_display_name_is_answered_and_frees_the_transaction(open_rig, tracebacks):
    register(open_rig)
    out = receive_bytes(open_rig, latin1_invite())
    assert any(m.method == "INVITE" for m, _ in out), out          # relayed, not stuck
    received = next(e for e in open_rig.effects.events if isinstance(e, ev.InviteReceived))
    assert received.caller.display_name == "Jos\\xe9"
    fwd = next(m for m, _ in out if m.method == "INVITE")
    assert b'"Jos\xe9"' in fwd.serialize()                       # relayed bytes unchanged


def test_latin1_invite_needing_auth_gets_its_challenge(rig, tracebacks):
    out = receive_bytes(rig, latin1_invite())
    assert [m.status for m, _ in out] == [407]
    rig.effects.advance(40)
    assert rig.core.server_txs == {}


def test_event_encoding_escapes_bytes_that_are_not_utf8():
    text = b"Jos\xe9 \\ \xc3\xa9".decode("utf-8", "surrogateescape")
    event = ev.CallCancel(id="x", ts_ms=1, call_id=text, from_tag="t", proxy="p", reason=text)
    decoded = ev.decode(ev.encode(event))
    assert decoded.call_id == "Jos\\xe9 \\ \u00e9" and decoded.reason == decoded.call_id


def test_emission_failure_never_stalls_a_transaction(open_rig, tracebacks, monkeypatch):
    register(open_rig)

    def broken(event):
        raise RuntimeError("outbox is broken")
    monkeypatch.setattr(open_rig.effects, "emit", broken)
    out = open_rig.receive(invite(), ALICE)
    assert any(m.method == "INVITE" for m, _ in out)


def test_runtime_emit_survives_any_event(tmp_path):
    from proxy.events.outbox import Outbox
    from proxy.runtime.worker import RuntimeEffects
    outbox = Outbox(tmp_path / "o.sqlite")
    effects = RuntimeEffects(None, outbox, None, {}, None, lambda: None)
    bad = "\udce9"
    effects.emit(ev.CallCancel(id="x", ts_ms=1, call_id=bad, from_tag="t", proxy="p"))
    effects.emit(object())                   # not an event at all: dropped, logged
    assert outbox.buffered == 1
    outbox.close()


# -- sizes and caches ------------------------------------------------------------------------

def options(via_extra="", extra="", body=""):
    return (f"OPTIONS sip:example.test SIP/2.0\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKo1;rport{via_extra}\n"
            f"From: <sip:alice@example.test>;tag=o1\nTo: <sip:example.test>\n"
            f"Call-ID: opt-1\nCSeq: 1 OPTIONS\nMax-Forwards: 70\n{extra}"
            f"Content-Length: {len(body)}\n\n{body}")


def test_oversized_header_section_gets_513_and_is_not_cached(open_rig, tracebacks):
    via_module.parse_via.cache_clear()
    out = open_rig.receive(options(extra="X-Bulk: " + "a" * 30_000 + "\n"), ALICE)
    assert [(m.status, t) for m, t in out] == [(513, ALICE)]
    assert len(out[0][0].serialize()) < 1000                 # the bulk is not echoed back
    # a 30 KB Via cannot be echoed in a reply: dropped, and never cached
    assert open_rig.receive(options(via_extra=";x=" + "a" * 30_000), ALICE) == []
    assert via_module.parse_via.cache_bytes() < 10_000


def test_oversized_body_gets_413(open_rig, tracebacks):
    out = open_rig.receive(options(body="x" * 70_000), ALICE)
    assert [m.status for m, _ in out] == [413]


def test_too_many_headers_gets_513(open_rig, tracebacks):
    out = open_rig.receive(options(extra="X-A: 1\n" * 300), ALICE)
    assert [m.status for m, _ in out] == [513]


def test_limits_are_settings(tmp_path, tracebacks):
    rig = CoreRig(tmp_path, auth=False, max_header_bytes=600)
    out = rig.receive(options(extra="X-Pad: " + "p" * 400 + "\n"), ALICE)
    assert [m.status for m, _ in out] == [513]


def test_via_cache_is_bounded_by_bytes():
    via_module.parse_via.cache_clear()
    for i in range(2000):
        via_module.parse_via(f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{i};x={'y' * 4000}")
    assert via_module.parse_via.cache_bytes() <= via_module.CACHE_BYTES


def test_parser_refuses_with_limits():
    data = options(via_extra=";x=" + "a" * 2000).replace("\n", "\r\n").encode()
    with pytest.raises(ParseError) as info:
        parse(data, max_header_bytes=1000)
    assert info.value.status == 513 and info.value.partial is not None


# -- responses go to the source -----------------------------------------------------------

def test_asserted_received_is_ignored(open_rig, tracebacks):
    text = options(via_extra=";received=evil.invalid").replace(";rport", "")
    out = open_rig.receive(text, ALICE)
    assert [(m.status, t.host) for m, t in out] == [(200, "192.0.2.10")]


def test_host_equal_to_source_drops_asserted_received(open_rig, tracebacks):
    text = options(via_extra=";received=203.0.113.66").replace(";rport", "")
    out = open_rig.receive(text, ALICE)
    assert [(m.status, t.host, t.port) for m, t in out] == [(200, "192.0.2.10", 5060)]
    assert "203.0.113.66" not in out[0][0].get("via")


def test_named_via_host_is_answered_at_the_source(open_rig, tracebacks):
    text = options().replace("192.0.2.10:5060", "phone.evil.invalid:5070")
    out = open_rig.receive(text, Target("udp", "192.0.2.10", 40000))
    assert [(m.status, t.host, t.port) for m, t in out] == [(200, "192.0.2.10", 40000)]


def test_bad_request_is_answered_at_the_source(open_rig, tracebacks):
    text = options().replace("192.0.2.10:5060", "victim.example:5070").replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS")
    out = open_rig.receive(text, Target("udp", "192.0.2.10", 40000))
    assert [(m.status, t.host, t.port) for m, t in out] == [(400, "192.0.2.10", 40000)]


def test_stray_2xx_is_never_relayed_to_a_named_host(open_rig, tracebacks):
    resp = ("SIP/2.0 200 OK\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKstray\n"
            "Via: SIP/2.0/UDP evil.invalid:5060;branch=z9hG4bKx\n"
            "From: <sip:a@example.test>;tag=1\nTo: <sip:b@example.test>;tag=2\n"
            "Call-ID: stray\nCSeq: 1 INVITE\nContent-Length: 0\n\n")
    assert open_rig.receive(resp, ALICE) == []


def test_stray_2xx_goes_to_the_dialogs_caller_only(open_rig, tracebacks):
    register(open_rig)
    out = open_rig.receive(invite(), ALICE)
    fwd = next(m for m, _ in out if m.method == "INVITE")
    open_rig.receive(response_to(fwd, 200, "OK"), BOB)
    open_rig.effects.advance(40)                         # the transactions are gone
    forged = response_to(fwd, 200, "OK").replace("192.0.2.10", "203.0.113.9")
    assert "received=203.0.113.9" in forged
    out = open_rig.receive(forged, BOB)
    assert [(m.status, t.host) for m, t in out] == [(200, "192.0.2.10")]


def test_unauthenticated_invite_draws_one_packet(rig, tracebacks):
    out = rig.receive(invite(), ALICE)
    assert [m.status for m, _ in out] == [407]
    rig.effects.advance(40)
    assert rig.effects.take() == []                     # no Timer G retransmissions
    rig.effects.now -= 40
    out = rig.receive(invite(), ALICE)                  # (a new transaction: it ended)
    assert [m.status for m, _ in out] == [407]
    again = rig.receive(invite(), ALICE)                # a retransmission re-draws it once
    assert [m.status for m, _ in again] == [407]


def test_relayed_invite_still_gets_100_trying(open_rig, tracebacks):
    from tests.harness.corefake import register
    register(open_rig)
    out = open_rig.receive(invite(), ALICE)
    assert sorted(str(m.status or m.method) for m, _ in out) == ["100", "INVITE"]


# -- malformed values: 4xx, never a traceback --------------------------------------------------

@pytest.mark.parametrize("via", [
    "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKv1;rport=abc",
    "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKv1;rport=99999",
    "SIP/2.0/UDP 192.0\x01.2.10:5060;branch=z9hG4bKv1",
    "SIP/2.0/UDP h\u00f6st.example:5060;branch=z9hG4bKv1",
    "SIP/2.0/UDP [::1:5060;branch=z9hG4bKv1",
    "SIP/2.0/UDP 192.0.2.10:99999;branch=z9hG4bKv1",
])
def test_malformed_via_gets_400_at_the_source(open_rig, tracebacks, via):
    text = options().replace("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKo1;rport", via)
    out = open_rig.receive(text, ALICE)
    assert [(m.status if m.status is not None else m.method, t.host) for m, t in out] == [(400, "192.0.2.10")]


def test_empty_route_is_a_400(open_rig, tracebacks):
    out = open_rig.receive(options(extra="Route: ,\n"), ALICE)
    assert [m.status for m, _ in out] == [400]


def test_cancel_after_a_final_response(rig, tracebacks):
    rig.receive(invite(), ALICE)
    cancel = invite().replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL")
    out = rig.receive(cancel, ALICE)
    assert [m.status for m, _ in out] == [200]


def test_unexpected_error_ends_the_transaction(open_rig, caplog, monkeypatch):
    class Broken:
        """The routing with a bug in ``initial`` (the compiled ScriptRouting's
        methods cannot be patched: the whole routing object is replaced)."""

        def __init__(self, real):
            self.real = real

        def initial(self, *args):
            raise RuntimeError("bug")

        def __getattr__(self, name):
            return getattr(self.real, name)
    monkeypatch.setattr(open_rig.engine, "routing", Broken(open_rig.engine.routing))
    out = open_rig.receive(invite(), ALICE)
    assert [m.status for m, _ in out] == [500]
    open_rig.effects.advance(40)
    assert open_rig.core.server_txs == {}


def test_serialize_keeps_raw_bytes():
    data = b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nFrom: \"\xff\" <sip:a@b>;tag=1\r\n" \
           b"To: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    assert parse(data).serialize() == data
    assert isinstance(parse(data), SipMessage)


def test_credit_request_carries_any_bytes():
    from proxy.contract import credit
    call_id = b"c\xe9".decode("utf-8", "surrogateescape")
    request = credit.AuthorizeRequest(id="r", ts_ms=1, call_id=call_id, account="a@x", destination="1",
                                      request_uri="sip:1@x", caller_uri="sip:a@x")
    assert credit.decode_request(credit.encode(request)).call_id == "c\\xe9"


def test_weighted_gateway_choice_takes_any_call_id():
    from proxy.routing.drouting import GatewayRef, _ordered
    refs = (GatewayRef("gw1", 1), GatewayRef("gw2", 3))
    call_id = b"c\xe9".decode("utf-8", "surrogateescape")
    assert {r.name for r in _ordered(refs, call_id, "salt")} == {"gw1", "gw2"}


def test_runtime_sends_udp_to_addresses_only(tmp_path):
    from proxy.events.outbox import Outbox
    from proxy.runtime.worker import RuntimeEffects

    class Endpoint:
        def __init__(self):
            self.sent = []

        def send(self, data, host, port):
            if port == 0:
                raise OSError(22, "Invalid argument")
            self.sent.append((host, port))
            return True

    endpoint = Endpoint()
    outbox = Outbox(tmp_path / "o.sqlite")
    effects = RuntimeEffects(None, outbox, endpoint, {}, None, lambda: None)
    assert effects.send(b"x", Target("udp", "evil.invalid", 5060)) is False    # never resolved
    assert effects.send(b"x", Target("udp", "h\u00f6st", 5060)) is False
    assert effects.send(b"x", Target("udp", "192.0.2.1", 0)) is False          # EINVAL: a failed send
    assert effects.send(b"x", Target("udp", "2001:db8::1", 5060)) is True
    assert endpoint.sent == [("2001:db8::1", 5060)]
    outbox.close()
