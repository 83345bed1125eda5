"""RFC 3261 message parsing: keeps what it does not know, refuses what it cannot read."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sip.headers import split_commas
from proxy.sip.message import ParseError, parse
from proxy.sip.stream import FramingError, StreamFramer
from proxy.sip.uri import UriError, parse_name_addr, parse_uri
from proxy.sip.via import parse_via

INVITE = (
    "INVITE sip:bob@example.test SIP/2.0\r\n"
    "v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKold, SIP/2.0/UDP 10.0.0.9\r\n"
    "Max-Forwards: 70\r\n"
    "t: Bob <sip:bob@example.test>\r\n"
    "f: \"Alice, A.\" <sip:alice@example.test>;tag=1928301774\r\n"
    "i: a84b4c76e66710@pc33\r\n"
    "CSeq: 314159 INVITE\r\n"
    "m: <sip:alice@pc33.example.test>\r\n"
    "X-Custom-Thing: keep me; exactly\r\n"
    "Subject: a folded\r\n"
    "  subject line\r\n"
    "c: application/sdp\r\n"
    "l: 10\r\n"
    "\r\n"
    "v=0\r\no=-\r\nEXTRA"
)


def test_compact_forms_folding_unknown_headers_and_body():
    msg = parse(INVITE.encode())
    assert msg.method == "INVITE" and msg.uri == "sip:bob@example.test"
    assert msg.call_id == "a84b4c76e66710@pc33"
    assert msg.cseq == (314159, "INVITE")
    assert msg.get("x-custom-thing") == "keep me; exactly"
    assert msg.get("subject") == "a folded subject line"
    assert msg.body == b"v=0\r\no=-\r\n"          # Content-Length wins over trailing bytes
    assert len(msg.values("via")) == 3
    assert parse_name_addr(msg.get("from")).tag == "1928301774"
    out = msg.serialize()
    assert b"\r\nv: SIP/2.0/UDP" in out and b"X-Custom-Thing: keep me; exactly" in out
    again = parse(out)
    assert [h[:2] for h in again.headers if h[0] != "content-length"] == \
        [h[:2] for h in msg.headers if h[0] != "content-length"]
    assert again.body == msg.body


def test_response_start_line():
    msg = parse(b"SIP/2.0 180 Ringing Now\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
                b"To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n")
    assert msg.status == 180 and msg.reason == "Ringing Now" and not msg.is_request


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"INVITE\r\n\r\n", "start line"),
    (b"INVITE sip:x SIP/3.0\r\n\r\n", "version"),
    (b"SIP/2.0 99 Low\r\n\r\n", "status"),
    (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n", "missing"),
    (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n"
     b"Call-ID: 1\r\nCSeq: 1 BYE\r\n\r\n", "does not match"),
    (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n"
     b"Call-ID: 1\r\nCSeq: 1 INVITE\r\nContent-Length: 50\r\n\r\nshort", "shorter"),
    (b"INVITE sip:a@b SIP/2.0\r\nbroken header line\r\n\r\n", "malformed header"),
])
def test_malformed_messages_raise_parse_error_with_reason(data, reason):
    with pytest.raises(ParseError) as err:
        parse(data)
    assert reason in err.value.reason


def test_partial_request_is_kept_for_a_400():
    with pytest.raises(ParseError) as err:
        parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n")
    assert err.value.partial is not None and err.value.partial.method == "OPTIONS"


def test_via_rport_and_received():
    via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport=5999;received=198.51.100.7")
    assert via.branch == "z9hG4bK1" and via.response_target() == ("198.51.100.7", 5999)
    assert parse_via("SIP/2.0/TCP host").response_target() == ("host", 5060)


def test_uris_and_name_addr():
    u = parse_uri("sip:alice:pw@Example.TEST:5070;transport=TCP;lr?subject=x")
    assert (u.user, u.password, u.host, u.port, u.transport, u.loose_route) == \
        ("alice", "pw", "example.test", 5070, "tcp", True)
    assert str(parse_uri("sip:[2001:db8::1]:5060")) == "sip:[2001:db8::1]:5060"
    assert parse_uri("tel:+4930123;phone-context=x").user == "+4930123"
    na = parse_name_addr("sip:bob@h;tag=9;expires=60")
    assert na.uri == "sip:bob@h" and na.params == {"tag": "9", "expires": "60"}
    with pytest.raises(UriError):
        parse_uri("http://example.test")
    with pytest.raises(UriError):
        parse_uri("sip:a@host:99999")


def test_split_commas_respects_quotes_and_brackets():
    assert split_commas('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == ['"a, b" <sip:x@y;p=1,2>', "<sip:z@w>"]


def test_stream_framing():
    framer = StreamFramer()
    one = INVITE.replace("l: 10", "l: 15").encode()
    assert framer.feed(b"\r\n\r\n" + one[:50]) == []
    out = framer.feed(one[50:] + one[:10])
    assert out == [one]
    assert framer.feed(one[10:]) == [one]
    with pytest.raises(FramingError):
        StreamFramer().feed(b"INVITE sip:a SIP/2.0\r\nContent-Length: abc\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parser(data):
    try:
        parse(data)
    except ParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(INVITE.encode().split(b"\r\n")), min_size=1, max_size=20))
def test_shuffled_header_lines_never_crash(lines):
    try:
        parse(b"\r\n".join(lines) + b"\r\n\r\n")
    except ParseError:
        pass


@pytest.mark.parametrize("data", [b" \r\n\t\r\n", b"\x0b\x0c "])
def test_whitespace_only_is_an_empty_message(data):
    with pytest.raises(ParseError) as err:
        parse(data)
    assert "empty" in err.value.reason


MINIMAL = ("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
           "To: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n")


@pytest.mark.parametrize("ends", ["\n", "mixed"])
def test_bare_lf_line_ends_are_tolerated(ends):
    text = MINIMAL.replace("\r\n", "\n") if ends == "\n" else MINIMAL.replace("From", "X: 1\nFrom", 1)
    msg = parse(text.encode())
    assert msg.call_id == "c1" and msg.get("from") == "<sip:a@b>;tag=1"
    assert "\r" not in "".join(value for _, _, value in msg.headers)


def test_header_line_with_empty_name_is_refused():
    with pytest.raises(ParseError) as err:
        parse(MINIMAL.replace("Call-ID: c1", ": c1").encode())
    assert "malformed header" in err.value.reason


def test_a_copy_shares_no_edit_with_its_original():
    original = parse(MINIMAL.encode())
    copy = original.copy()
    copy.set("max-forwards", "69")
    copy.prepend("via", "SIP/2.0/UDP proxy;branch=z9hG4bK2")
    copy.replace_first_value("to", "<sip:x@y>")
    assert copy.pop_first_value("via") == "SIP/2.0/UDP proxy;branch=z9hG4bK2"
    assert original.get("max-forwards") is None and original.get("to") == "<sip:a@b>"
    assert original.values("via") == ["SIP/2.0/UDP h;branch=z9hG4bK1"]
    assert copy.get("to") == "<sip:x@y>"
