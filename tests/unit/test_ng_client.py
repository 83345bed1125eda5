"""The sans-I/O ng client: cookies, reply matching, the retransmission schedule, reply parsing."""
from __future__ import annotations

from proxy.media import ng
from proxy.media.bencode import decode, encode

RELAY = ("127.0.0.1", 2223)
OTHER = ("127.0.0.1", 2224)


def reply_to(send: ng.Send, body: dict) -> bytes:
    return send.cookie.encode() + b" " + encode(body)


def test_request_datagram_is_cookie_space_bencoded_command() -> None:
    session = ng.NgSession()
    send = session.request(RELAY, ng.offer("c1", "ft", "v=0\r\n", flags=["trust-address"], ICE="remove"), 0.0)
    cookie, _, body = send.datagram.partition(b" ")
    assert cookie.decode() == send.cookie and len(send.cookie) == 16
    assert decode(body) == {"command": "offer", "call-id": "c1", "from-tag": "ft", "sdp": "v=0\r\n",
                            "flags": ["trust-address"], "ICE": "remove"}
    assert session.request(RELAY, ng.ping(), 0.0).cookie != send.cookie


def test_reply_resolves_only_its_own_request_from_its_own_relay() -> None:
    session = ng.NgSession()
    first, second = session.request(RELAY, ng.ping(), 0.0), session.request(RELAY, ng.ping(), 0.0)
    assert session.on_datagram(reply_to(second, {"result": "pong"}), OTHER) is None        # wrong source
    answered = session.on_datagram(reply_to(second, {"result": "pong"}), RELAY)
    assert answered is not None and answered.cookie == second.cookie and answered.reply.result == "pong"
    assert session.on_datagram(reply_to(second, {"result": "pong"}), RELAY) is None        # duplicate
    assert len(session) == 1 and session.dropped == 2
    assert session.on_datagram(reply_to(first, {"result": "pong"}), RELAY) is not None


def test_garbage_datagrams_are_dropped_not_raised() -> None:
    session = ng.NgSession()
    send = session.request(RELAY, ng.ping(), 0.0)
    for junk in (b"", b"nospace", b" d6:result4:ponge", send.cookie.encode() + b" i1e",
                 send.cookie.encode() + b" d6:result", b"x" * 100 + b" de", b"\xff" * 70000):
        assert session.on_datagram(junk, RELAY) is None
    assert session.dropped == 7 and len(session) == 1


def test_retransmission_schedule_then_timeout() -> None:
    schedule = ng.Schedule(timeout=0.5, retries=2)
    assert schedule.sends == (0.0, 0.5, 1.0) and schedule.deadline == 1.5
    session = ng.NgSession(schedule)
    send = session.request(RELAY, ng.query("c1"), 10.0)
    assert session.next_due() == 10.5 and session.due(10.4) == []
    again = session.due(10.5)
    assert again == [ng.Send(RELAY, send.datagram, send.cookie, 1)]
    assert session.next_due() == 11.0
    assert [a.attempt for a in session.due(11.0) if isinstance(a, ng.Send)] == [2]
    assert session.next_due() == 11.5 and session.due(11.4) == []
    assert session.due(11.5) == [ng.TimedOut(RELAY, send.cookie, "query")]
    assert session.next_due() is None and len(session) == 0
    assert session.on_datagram(reply_to(send, {"result": "ok"}), RELAY) is None   # too late


def test_no_retries_means_one_send_and_a_deadline() -> None:
    session = ng.NgSession(ng.Schedule(timeout=1.0, retries=0))
    session.request(RELAY, ng.ping(), 0.0)
    assert session.next_due() == 1.0
    assert [type(a).__name__ for a in session.due(1.0)] == ["TimedOut"]


def test_requests_in_flight_are_bounded() -> None:
    session = ng.NgSession(max_in_flight=2)
    session.request(RELAY, ng.ping(), 0.0)
    session.request(RELAY, ng.ping(), 0.0)
    try:
        session.request(RELAY, ng.ping(), 0.0)
    except ng.NgBusy:
        pass
    else:
        raise AssertionError("a third request was accepted")


def test_error_reply_and_sdp() -> None:
    error = ng.parse_reply("answer", {"result": "error", "error-reason": "Unknown call-id"})
    assert not error.ok and error.error_reason == "Unknown call-id" and error.stats is None
    offer = ng.parse_reply("offer", {"result": "ok", "sdp": "v=0\r\n", "warning": "x"})
    assert offer.ok and offer.sdp == "v=0\r\n" and offer.warning == "x"
    assert ng.parse_reply("offer", {"sdp": 5}).result == "error"


QUERY = {
    "result": "ok", "created": 1796600657, "last signal": 1796600658,
    "SSRC": {"4660": {"bytes": 860, "packets": 5, "average MOS": {"MOS": 43, "jitter": 2, "packet loss": 1,
                                                                   "round-trip time": 1500}},
             "bogus": {}},
    "tags": {"ft": {"tag": "ft", "medias": [{"index": 1, "type": "audio", "streams": [
        {"local port": 26208, "endpoint": {"address": "127.0.0.1", "port": 52177}, "last packet": 1796600657,
         "flags": ["RTP", "filled"], "SSRC": 4660, "stats": {"packets": 5, "bytes": 860, "errors": 0}},
        {"local port": 26209, "flags": ["RTCP"], "stats": {"packets": 0, "bytes": 0, "errors": 0}}]}]},
             "tt": "not a dict"},
    "totals": {"RTP": {"packets": 10, "bytes": 1720, "errors": 1}, "RTCP": {"packets": 0}},
}


def test_query_statistics_are_typed() -> None:
    stats = ng.parse_reply("query", QUERY).stats
    assert stats is not None
    assert stats.created == 1796600657 and stats.last_signal == 1796600658
    assert stats.rtp == ng.Totals(10, 1720, 1) and stats.rtcp == ng.Totals(0, 0, 0)
    rtp, rtcp = stats.streams
    assert (rtp.tag, rtp.media_index, rtp.media_type, rtp.local_port, rtp.endpoint, rtp.rtcp, rtp.packets) == \
        ("ft", 1, "audio", 26208, "127.0.0.1:52177", False, 5)
    assert rtcp.rtcp and rtcp.endpoint == "" and rtcp.last_packet == 0
    assert (rtp.ssrc, rtcp.ssrc) == (4660, 0)      # the SSRC a party sends with: its quality in stats.ssrcs
    assert stats.ssrcs == (ng.SsrcStats(4660, 5, 860, mos=4.3, jitter=2.0, packet_loss=1.0, round_trip_ms=1.5),)


def test_statistics_only_for_delete_and_query() -> None:
    assert ng.parse_reply("offer", QUERY).stats is None
    assert ng.parse_reply("delete", QUERY).stats is not None
    assert ng.parse_reply("delete", {"result": "ok"}).stats == ng.CallStats()
