"""The media relay's state table (proxy/core/media.py), driven through the core with the recording fake:
offer/answer/delete, order of held responses, re-INVITE, CANCEL, failures, the bypass policy and media timeouts."""
from __future__ import annotations

import pytest

from proxy.contract import events as ev
from proxy.core.media import Heard, Phase, clock_ms, last_heard, silence
from proxy.core.ports import Target
from proxy.infra import clock
from proxy.infra.config import MediaSettings
from proxy.media.ng import CallStats, NgReply, StreamStats
from tests.harness.corefake import ALICE, BOB, BYE_FROM_BOB, invite, register, response_to, subscriber_rig

pytestmark = pytest.mark.clock

SDP_A = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_B = "v=0\r\no=- 2 2 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
RELAYED_A = SDP_A.replace("192.0.2.10", "203.0.113.5").replace("4000", "16400")
RELAYED_B = SDP_B.replace("192.0.2.20", "203.0.113.5").replace("6000", "16402")
HOST_NOW = 1_800_000_000.0          # the host's Unix time in these tests (rtpengine's timestamps)


def media_settings(**changes) -> MediaSettings:
    base = dict(enabled=True, policy="always", launch=False, poll_seconds=5.0,
                rtp_timeout_seconds=60.0, one_way_timeout_seconds=30.0)
    return MediaSettings(**{**base, **changes})


@pytest.fixture
def rig(tmp_path):
    rig = subscriber_rig(tmp_path, auth=False, max_dialog_seconds=3600, media=media_settings())
    rig.host = [HOST_NOW]
    rig.core.media.host_clock = lambda: rig.host[0]
    register(rig)
    return rig


def with_sdp(text: str, sdp: str) -> str:
    """A message of the corefake helpers with an SDP body instead of its own."""
    head = text.split("Content-Length:")[0]
    if "Content-Type:" not in head:
        head += "Content-Type: application/sdp\n"
    return head + f"Content-Length: {len(sdp)}\n\n" + sdp.replace("\r\n", "\n")


def ok(sdp: str = "") -> NgReply:
    return NgReply(result="ok", sdp=sdp)


def stats(caller_last: int, callee_last: int, created: int = int(HOST_NOW) - 100,
          caller_packets: int = 500, callee_packets: int = 400) -> CallStats:
    def stream(tag, last, packets, rtcp=False):
        return StreamStats(tag=tag, media_index=1, media_type="audio", local_port=16400, endpoint="x:1",
                           last_packet=last, rtcp=rtcp, packets=packets, bytes=packets * 172, errors=0)
    return CallStats(created=created, streams=(stream("a1", caller_last, caller_packets),
                                               stream("b1", callee_last, callee_packets),
                                               stream("b1", int(HOST_NOW), 9, rtcp=True)))


def sent(out, method=None, status=None):
    return [m for m, _ in out if (method is None or m.method == method) and (status is None or m.status == status)]


def start_call(rig):
    """INVITE with SDP, offered and relayed: returns the INVITE bob got."""
    out = rig.receive(with_sdp(invite(), SDP_A), ALICE)
    assert sent(out, "INVITE") == []                     # held until rtpengine answers
    assert [m.status for m, _ in out] == [100]
    kind, params = rig.effects.answer_media(ok(RELAYED_A))
    assert (kind, params["call_id"], params["from_tag"]) == ("offer", "call-1", "a1")
    assert params["sdp"].startswith("v=0") and params["options"]["replace"] == ["origin", "session-connection"]
    (relayed,) = sent(rig.effects.take(), "INVITE")
    assert relayed.body.decode().replace("\r\n", "\n") == RELAYED_A.replace("\r\n", "\n")
    return relayed


def answer_call(rig, relayed):
    out = rig.receive(with_sdp(response_to(relayed, 200, "OK"), SDP_B), BOB)
    assert sent(out, status=200) == []                   # held until the answer is rewritten
    kind, params = rig.effects.answer_media(ok(RELAYED_B))
    assert (kind, params["from_tag"], params["to_tag"]) == ("answer", "a1", "b1")
    (up,) = sent(rig.effects.take(), status=200)
    assert RELAYED_B.split("\r\n")[3] in up.body.decode()
    return up


def test_offer_answer_bye_gives_media_stats_then_delete(rig):
    relayed = start_call(rig)
    answer_call(rig, relayed)
    session = rig.core.media.sessions["call-1"]
    assert session.phase is Phase.ACTIVE and session.dialog is not None
    rig.receive(BYE_FROM_BOB, BOB)
    kind, params = rig.effects.answer_media(NgReply(result="ok", stats=stats(int(HOST_NOW), int(HOST_NOW) - 1)))
    assert kind == "query"
    assert rig.effects.answer_media(ok())[0] == "delete"
    (media,) = [e for e in rig.effects.events if isinstance(e, ev.MediaStats)]
    assert (media.caller.packets, media.callee.packets) == (500, 400)      # RTCP not counted
    assert media.relay == "udp:127.0.0.1:2223" and media.to_tag == "b1"
    now = clock.now_ms()
    assert abs(media.callee.last_packet_ms - (now - 1000)) < 500
    assert "call-1" not in rig.core.media.sessions and rig.effects.media_requests == []


def test_held_responses_keep_their_order_and_2xx_retransmissions_reuse_the_answer(rig):
    relayed = start_call(rig)
    rig.receive(with_sdp(response_to(relayed, 183, "Session Progress"), SDP_B), BOB)
    rig.receive(with_sdp(response_to(relayed, 200, "OK"), SDP_B.replace("6000", "6002")), BOB)
    assert [k for k, _, _ in rig.effects.media_requests] == ["answer", "answer"]
    pending_183 = rig.effects.media_requests.pop(0)
    rig.effects.answer_media(ok(RELAYED_B.replace("16402", "16404")))      # the 200's answer first
    assert sent(rig.effects.take()) == []                                  # still behind the 183
    rig.effects.media_requests.append(pending_183)
    rig.effects.answer_media(ok(RELAYED_B))
    assert [m.status for m, _ in rig.effects.take()] == [183, 200]
    # the 200 again: the same rewritten SDP, no new ng request
    out = rig.receive(with_sdp(response_to(relayed, 200, "OK"), SDP_B.replace("6000", "6002")), BOB)
    (again,) = sent(out, status=200)
    assert "m=audio 16404" in again.body.decode() and rig.effects.media_requests == []


def test_cancel_while_the_offer_is_out_ends_it_and_deletes(rig):
    rig.receive(with_sdp(invite(), SDP_A), ALICE)
    cancel = invite().replace("INVITE sip:bob", "CANCEL sip:bob").replace("1 INVITE", "1 CANCEL")
    out = rig.receive(cancel.split("Content-Type")[0] + "Content-Length: 0\n\n", ALICE)
    assert sorted(m.status for m, _ in out) == [200, 487]
    assert rig.effects.answer_media(ok(RELAYED_A))[0] == "offer"
    assert rig.effects.answer_media(ok())[0] == "delete"                   # no INVITE ever left
    assert sent(rig.effects.take(), "INVITE") == [] and "call-1" not in rig.core.media.sessions


def test_offer_failure_relays_the_invite_unchanged(rig, caplog):
    rig.receive(with_sdp(invite(), SDP_A), ALICE)
    rig.effects.answer_media(None)                                         # rtpengine silent
    (relayed,) = sent(rig.effects.take(), "INVITE")
    assert "192.0.2.10" in relayed.body.decode()
    assert "media relay offer failed" in caplog.text
    out = rig.receive(with_sdp(response_to(relayed, 200, "OK"), SDP_B), BOB)
    assert len(sent(out, status=200)) == 1 and rig.effects.media_requests == []


def test_final_failure_queries_and_deletes(rig):
    relayed = start_call(rig)
    out = rig.receive(response_to(relayed, 486, "Busy Here"), BOB)
    assert [m.status for m in sent(out) if m.status] == [486]
    assert [rig.effects.answer_media(NgReply(result="ok", stats=stats(0, 0)))[0],
            rig.effects.answer_media(ok())[0]] == ["query", "delete"]
    (media,) = [e for e in rig.effects.events if isinstance(e, ev.MediaStats)]
    assert media.leg is None
    assert rig.effects.media_requests == []              # ended once, however many paths saw it end


def test_nat_policy_bypasses_calls_with_no_nat_and_relays_a_natted_caller(tmp_path):
    rig = subscriber_rig(tmp_path, auth=False, media=media_settings(policy="nat"))
    register(rig)
    out = rig.receive(with_sdp(invite(), SDP_A), ALICE)
    assert len(sent(out, "INVITE")) == 1 and rig.effects.media_requests == []
    natted = invite(call_id="call-2", branch="z9hG4bKinv2").replace(
        "Contact: <sip:alice@192.0.2.10:5060>", "Contact: <sip:alice@10.1.1.7:5060>")
    out = rig.receive(with_sdp(natted, SDP_A), ALICE)
    assert sent(out, "INVITE") == [] and rig.effects.media_requests[0][0] == "offer"


def test_reinvite_from_the_callee_is_offered_and_answered_on_the_same_call(rig):
    relayed = start_call(rig)
    answer_call(rig, relayed)
    reinvite = BYE_FROM_BOB.replace("BYE", "INVITE").replace("bye1", "reinv1")
    out = rig.receive(with_sdp(reinvite, SDP_B.replace("6000", "6010")), BOB)
    assert sent(out, "INVITE") == []
    kind, params = rig.effects.answer_media(ok(RELAYED_B))
    assert (kind, params["from_tag"]) == ("offer", "b1")
    (to_alice,) = sent(rig.effects.take(), "INVITE")
    assert "16402" in to_alice.body.decode()
    reply = with_sdp(response_to(to_alice, 200, "OK", to_tag="").replace(
        "To: ", "X-To: ", 1), SDP_A)
    reply = reply.replace("X-To: ", "To: ")
    rig.receive(reply, ALICE)
    kind, params = rig.effects.answer_media(ok(RELAYED_A))
    assert (kind, params["from_tag"], params["to_tag"]) == ("answer", "b1", "a1")
    (up,) = sent(rig.effects.take(), status=200)
    assert "16400" in up.body.decode()


def poll(rig, reply):
    """Let the poll timer fire and answer its query."""
    rig.effects.advance(rig.core.media.settings.poll_seconds)
    kind, _ = rig.effects.answer_media(reply)
    assert kind == "query"


def test_callee_silent_while_the_caller_talks_ends_the_call(rig):
    answer_call(rig, start_call(rig))
    poll(rig, NgReply(result="ok", stats=stats(int(HOST_NOW), int(HOST_NOW) - 10)))
    assert rig.effects.events[-1].__class__ is not ev.MediaTimeout       # 10 s < 30 s: goes on
    rig.host[0] += 25
    poll(rig, NgReply(result="ok", stats=stats(int(rig.host[0]), int(HOST_NOW) - 10)))
    (timeout,) = [e for e in rig.effects.events if isinstance(e, ev.MediaTimeout)]
    assert timeout.silent == "callee" and timeout.reason.startswith("media timeout: callee silent")
    assert abs(timeout.last_media_ms - (clock.now_ms() - 35_000)) < 1000
    byes = sent(rig.effects.take(), "BYE")
    assert len(byes) == 2
    assert {b.get("reason") for b in byes} == {'SIP;cause=408;text="media timeout: callee silent"'}
    assert rig.effects.answer_media(ok())[0] == "delete"                   # stats came from the poll
    names = [e.__class__.__name__ for e in rig.effects.events]
    assert names.index("MediaTimeout") < names.index("MediaStats")


def test_both_silent_and_unknown_call_id_end_as_both(rig):
    answer_call(rig, start_call(rig))
    rig.host[0] += 62
    poll(rig, NgReply(result="ok", stats=stats(int(HOST_NOW), int(HOST_NOW) - 5)))
    (timeout,) = [e for e in rig.effects.events if isinstance(e, ev.MediaTimeout)]
    assert timeout.silent == "both"
    assert abs(timeout.last_media_ms - (clock.now_ms() - 62_000)) < 1000


def test_unknown_call_id_from_rtpengine_ends_the_call(rig):
    answer_call(rig, start_call(rig))
    poll(rig, NgReply(result="error", error_reason="Unknown call-id"))
    (timeout,) = [e for e in rig.effects.events if isinstance(e, ev.MediaTimeout)]
    assert timeout.silent == "both"
    assert len(sent(rig.effects.take(), "BYE")) == 2
    assert rig.effects.media_requests == []                                # nothing left to delete
    assert any(isinstance(e, ev.MediaStats) for e in rig.effects.events)


def test_a_silent_relay_does_not_end_calls(rig):
    answer_call(rig, start_call(rig))
    rig.host[0] += 1000
    poll(rig, None)
    assert not any(isinstance(e, ev.MediaTimeout) for e in rig.effects.events)
    assert rig.core.media.sessions["call-1"].poll is not None              # polled again


@pytest.mark.parametrize(("caller_ago", "callee_ago", "expected"), [
    (0, 0, None),
    (0, 30, None),           # stamped 30 s ago: maybe only 29.01 s of silence
    (0, 31, "callee"),
    (31, 0, "caller"),
    (1, 31, "callee"),
    (31, 31, None),          # both quiet, neither sending: rtp_timeout decides
    (61, 60, None),
    (61, 62, "both"),
])
def test_silence_table(caller_ago, callee_ago, expected):
    s = stats(int(HOST_NOW) - caller_ago, int(HOST_NOW) - callee_ago)
    verdict = silence(s, "a1", "b1", HOST_NOW, 60, 30)
    assert (verdict[0] if verdict else None) == expected


def test_a_party_that_never_sent_counts_from_the_call_creation():
    s = stats(int(HOST_NOW), 0, created=int(HOST_NOW) - 31)
    assert silence(s, "a1", "b1", HOST_NOW, 60, 30) == ("callee", HOST_NOW - 31)
    assert silence(stats(int(HOST_NOW), 0, created=int(HOST_NOW) - 30), "a1", "b1", HOST_NOW, 60, 30) is None


def test_host_times_keep_their_distance_to_now_on_a_shifted_clock():
    assert clock_ms(1000.0, 1010.5, 5_000_000) == 5_000_000 - 10_500


def test_policy_keys_are_checked():
    from proxy.infra.config import Config, checks
    bad = Config(media=MediaSettings(policy="sometimes", port_min=30000, port_max=20000, poll_seconds=100))
    failed = {key for key, good, _ in checks(bad) if not good}
    assert {"media.policy", "media.port_max", "media.poll_seconds"} <= failed
    assert not {key for key, good, _ in checks(Config()) if not good and key.startswith("media")}


def test_default_target_is_relayed_only_by_policy():
    from proxy.core.media import relay_wanted
    from proxy.sip.message import parse
    msg = parse(with_sdp(invite(), SDP_A).replace("\n", "\r\n").encode())
    assert relay_wanted("nat", msg, ALICE, [Target("udp", "192.0.2.20", 5062, nat=True)])
    assert not relay_wanted("nat", msg, ALICE, [Target("udp", "192.0.2.20", 5062)])
    assert relay_wanted("always", msg, ALICE, [])


def test_only_invites_start_a_media_session(rig):
    message = with_sdp(invite(), SDP_A).replace("INVITE sip:bob", "MESSAGE sip:bob").replace("1 INVITE", "1 MESSAGE")
    out = rig.receive(message, ALICE)
    assert len(sent(out, "MESSAGE")) == 1 and rig.effects.media_requests == []


def test_up_starts_the_launcher_only_when_media_is_enabled_and_launched(tmp_path):
    from api.supervisor import Up
    from proxy.infra.config import Config

    def names(media):
        return [c.name for c in Up(Config(media=media), tmp_path, None).children("127.0.0.1:9092")]
    assert "media" in names(MediaSettings(enabled=True))
    assert "media" not in names(MediaSettings(enabled=True, launch=False))
    assert "media" not in names(MediaSettings())
    (child,) = [c for c in Up(Config(media=MediaSettings(enabled=True)), tmp_path, None).children("b:1")
                if c.name == "media"]
    assert child.argv[1:3] == ["-m", "proxy.runtime.rtpengine"] and child.ready == "MEDIA READY"


def test_a_natted_party_gets_media_at_its_signalling_source_until_it_sends(tmp_path):
    rig = subscriber_rig(tmp_path, auth=False, media=media_settings(policy="nat"))
    register(rig)
    natted = invite().replace("Contact: <sip:alice@192.0.2.10:5060>", "Contact: <sip:alice@10.1.1.7:5060>")
    rig.receive(with_sdp(natted, SDP_A), ALICE)
    _, params = rig.effects.answer_media(ok(RELAYED_A))
    assert params["options"]["flags"] == ["SIP-source-address"]
    assert params["options"]["received-from"] == ["IP4", ALICE.host]
    (relayed,) = sent(rig.effects.take(), "INVITE")
    rig.receive(with_sdp(response_to(relayed, 200, "OK"), SDP_B), BOB)
    _, params = rig.effects.answer_media(ok(RELAYED_B))
    assert "flags" not in params["options"]                # bob is not behind a NAT


def test_a_party_s_quality_comes_from_the_ssrc_it_sent_with():
    from dataclasses import replace

    from proxy.core.media import flow
    from proxy.media.ng import SsrcStats
    base = stats(int(HOST_NOW), int(HOST_NOW))
    streams = tuple(replace(st, ssrc=1111 if st.tag == "a1" else 2222) for st in base.streams)
    quality = (SsrcStats(ssrc=2222, packets=400, bytes=0, mos=4.3, jitter=3.6, packet_loss=2.0, round_trip_ms=None),)
    both = replace(base, streams=streams, ssrcs=quality)
    callee = flow(both, "b1", HOST_NOW, 10_000_000)
    assert (callee.mos_x10, callee.jitter_ms, callee.lost) == (43, 4, 8)
    caller = flow(both, "a1", HOST_NOW, 10_000_000)
    assert (caller.mos_x10, caller.jitter_ms, caller.lost) == (None, None, None)     # no RTCP about it


def test_last_media_is_narrowed_by_the_polls_not_floored_to_the_stamp_second():
    """rtpengine stamps whole seconds: a packet stamped T came in [T, T + 1).  A
    poll at T + 0.25 that saw the count grow since the poll at T - 0.25 bounds it
    to [T, T + 0.25): the estimate is the middle, never before the stamp."""
    heard = Heard(polled_at=HOST_NOW - 0.25)
    heard.observe(50, HOST_NOW + 0.25)
    stamp = float(int(HOST_NOW))
    assert last_heard(stamp, heard) == (max(stamp, HOST_NOW - 0.25) + min(stamp + 1, HOST_NOW + 0.25)) / 2
    assert last_heard(stamp, None) == stamp + 0.5          # no poll saw it: the middle of the second
    assert last_heard(0, heard) == 0                        # never sent
    stale = Heard(polled_at=stamp - 10)
    stale.observe(5, stamp - 9)                             # grew long ago; the stamp is later
    assert last_heard(stamp, stale) == stamp                # bounds that contradict: the stamp wins
