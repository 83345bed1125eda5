"""Issue 14 on a real network: baresip phones, each in a home of its own
behind its own NAT (tests/harness/netns.py), talk through `sipledger up`
with ``[media] enabled`` (rtpengine launched by `up`) and NAT keep-alives on.

* the call (alice to bob): RTP flows both ways through rtpengine (the NATs'
  counters of the phones' RTP ports grow on both sides; without the relay
  the homes receive nothing, their SDP names private addresses), the SDP
  each phone receives names the relay's public address, and the CDR carries
  the media columns from ``media.stats``;
* the callee's home dies mid-call (SIGKILL, link down: no BYE), once with
  the caller's media cut too (bob) and once with the caller still talking
  (carol): the proxy ends the call within the RTP timeout + 2 s, alice gets
  a BYE saying "media timeout", the CDR ends at the last media
  (``hangup_by`` ``media_timeout``) and the debit charges up to there, not
  up to the detection;
* alice's registration, once her NAT mapping is removed, is dropped after
  ``[nat] keepalive_failures`` unanswered pings, with a
  ``registration.dropped`` event saying why.
"""
from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import pytest

from tests.harness.calls import DOMAIN
from tests.harness.poll import eventually
from tests.harness.proxy import read_events
from tests.nat.conftest import ALICE, KEEPALIVE_FAILURES, KEEPALIVE_S, RTP_TIMEOUT_S, bindings

PACKETS = 100                 # "RTP flowed": more than 2 s of 20 ms packets each way
PRICE_PER_S = Decimal("0.01")
# how far the CDR's end may lie after the media stopped: rtpengine reports the
# last packet in whole seconds, and the CDR's answer (the 200 OK through the
# proxy) comes a few ms before the caller's CALL_ESTABLISHED
SLACK_MS = 1500


def header(message: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(.+)$", message, re.M | re.I)
    assert m, f"no {name} in\n{message}"
    return m.group(1).strip()


def received(phone, start: str) -> list[str]:
    """SIP messages ``phone`` received (its trace: "UDP src -> its address")."""
    return [m for m in phone.traced(start) if m.split("\n", 1)[0].endswith(f"{phone.host}:{phone.sip_port}")]


def sdp(message: str) -> str:
    start = message.find("v=0")
    assert start >= 0, f"no SDP in\n{message}"
    return message[start:]


def rtp_deltas(homes, before: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """RTP packets (into, out of) each of ``homes`` since ``before``."""
    return {h.index: tuple(now - then for now, then in zip(h.rtp_counts(), before[h.index])) for h in homes}


def call(alice, callee) -> tuple[str, float, dict[int, tuple[int, int]]]:
    """alice calls ``callee``; returns (Call-ID, when alice saw the answer, the
    homes' RTP counters before the call)."""
    homes = (alice.home, callee.home)
    before = {h.index: h.rtp_counts() for h in homes}
    mark_a, mark_b = len(alice.events), len(callee.events)
    alice.command("dial", f"sip:{callee.user}@{DOMAIN}")
    call_id = alice.wait_event("CALL_ESTABLISHED", 10, since=mark_a)["id"]
    answered = time.monotonic()
    callee.wait_event("CALL_ESTABLISHED", 10, call_id=call_id, since=mark_b)
    return call_id, answered, before


def cdr_of(sl, call_id: str, timeout: float = 20.0) -> dict:
    def written() -> dict | None:
        page = sl.client.get("/v1/cdrs", params={"account": ALICE, "limit": 10}).json()["items"]
        return next((c for c in page if c["call_id"] == call_id), None)
    return eventually(written, f"the CDR of {call_id}", timeout, interval=0.3)


def register_call_id(phone) -> str:
    return header(phone.traced("REGISTER")[-1], "Call-ID")


def test_two_nated_phones_talk_through_the_relay_and_the_cdr_has_the_media(sl, net, alice, bob):
    call_id, _, before = call(alice, bob)
    homes = (alice.home, bob.home)

    def flowing() -> dict | None:
        deltas = rtp_deltas(homes, before)
        return deltas if all(into > PACKETS and out > PACKETS for into, out in deltas.values()) else None

    deltas = eventually(flowing, f"more than {PACKETS} RTP packets into and out of both homes", 10, interval=0.2)
    # the relay is in the path: each phone was offered the relay's public address
    invite = received(bob, "INVITE")[-1]
    ok = [m for m in received(alice, "SIP/2.0 200") if "INVITE" in header(m, "CSeq")][-1]
    for what, message in (("bob's INVITE", invite), ("alice's 200 OK", ok)):
        assert f"c=IN IP4 {net.public_ip}" in sdp(message), f"{what} does not offer the relay:\n{message}"
        # (o= may keep the phone's own address: it names the session's origin, not where media goes)
        assert "c=IN IP4 192.168." not in sdp(message), f"{what} still sends media to a private address:\n{message}"

    mark = len(alice.events)
    alice.command("hangup")
    alice.wait_event("CALL_CLOSED", 10, call_id=call_id, since=mark)
    bob.wait_event("CALL_CLOSED", 10, call_id=call_id)

    stats = read_events(sl.kafka_bootstrap, call_id=call_id, types=["media.stats"], min_count=1, timeout=15)
    assert stats, f"no media.stats event for {call_id}"
    assert stats[-1]["caller"]["packets"] > PACKETS and stats[-1]["callee"]["packets"] > PACKETS, stats[-1]
    cdr = cdr_of(sl, call_id)
    assert cdr["hangup_by"] == "caller", cdr
    assert cdr["media_relay"], f"the CDR does not name the relay: {cdr}"
    assert cdr["caller_rtp_packets"] > PACKETS and cdr["callee_rtp_packets"] > PACKETS, cdr
    # what the relay counted is at least what the NATs had let out when they
    # were read (the call went on a little after that)
    alice_out, bob_out = deltas[alice.home.index][1], deltas[bob.home.index][1]
    assert cdr["caller_rtp_packets"] >= alice_out * 0.9 and cdr["callee_rtp_packets"] >= bob_out * 0.9, \
        (cdr, deltas)


# each case kills a callee of its own (conftest: a killed phone stays registered a while)
@pytest.mark.parametrize("caller,callee", [("silent_too", "bob"), ("still_talking", "carol")])
def test_callee_vanishing_mid_call_ends_it_at_the_last_media(sl, net, phone_pool, caller, callee):
    alice, gone = phone_pool.get("alice"), phone_pool.get(callee)
    call_id, answered, before = call(alice, gone)
    # a call with seconds of media: rtpengine dates the last packet to the
    # whole second, so a sub-second call could end "before" its answer
    eventually(lambda: all(into > PACKETS for into, _ in rtp_deltas((alice.home, gone.home), before).values()),
               f"more than {PACKETS} RTP packets into both homes", 10, interval=0.1)

    mark = len(alice.events)
    if caller == "silent_too":
        net.cut_media(alice.home)
    net.kill_home(gone.home)                    # no BYE: the callee is gone
    stopped = time.monotonic()
    try:
        alice.wait_event("CALL_CLOSED", RTP_TIMEOUT_S + 2, call_id=call_id, since=mark)
    finally:
        net.restore(alice.home)
    stopped_after_ms = (stopped - answered) * 1000

    byes = eventually(lambda: received(alice, "BYE"), "the proxy's BYE in alice's trace", 5)
    assert "media timeout" in header(byes[-1], "Reason").lower(), byes[-1]
    timeouts = read_events(sl.kafka_bootstrap, call_id=call_id, types=["media.timeout"], min_count=1, timeout=15)
    assert timeouts, f"no media.timeout event for {call_id}"
    assert timeouts[0]["silent"] == ("both" if caller == "silent_too" else "callee"), timeouts[0]

    cdr = cdr_of(sl, call_id)
    assert cdr["hangup_by"] == "media_timeout", cdr
    assert cdr["duration_ms"] <= stopped_after_ms + SLACK_MS, \
        f"the CDR runs {cdr['duration_ms']} ms; media stopped {stopped_after_ms:.0f} ms after the answer"
    assert cdr["duration_ms"] >= stopped_after_ms - SLACK_MS, cdr

    def debited() -> Decimal | None:
        history = json.loads(sl.run_cli("ledger", "history", ALICE, "--kind", "debit", "--json").stdout)
        amounts = [abs(Decimal(e["amount"])) for e in history if e.get("call_id") == call_id]
        return sum(amounts, Decimal(0)) if amounts else None

    charged = eventually(debited, f"alice's debit for {call_id}", 20, interval=0.5)
    assert charged == cdr["billable_s"] * PRICE_PER_S, (charged, cdr)
    assert cdr["billable_s"] * 1000 <= stopped_after_ms + SLACK_MS + 1000, \
        f"{cdr['billable_s']} s charged; media stopped {stopped_after_ms:.0f} ms after the answer"


def test_registration_dropped_when_its_nat_mapping_is_gone(sl, net, phone_pool):
    alice = phone_pool.get("alice")
    (binding,) = bindings(sl, "alice")
    assert binding.call_id == register_call_id(alice), binding
    assert binding.received and alice.home.nat_ip in binding.received, binding
    # the proxy keeps the pinhole open: its OPTIONS reach alice through the NAT
    eventually(lambda: received(alice, "OPTIONS"), "a keep-alive OPTIONS at alice", KEEPALIVE_S * 3 + 2)

    net.cut_mapping(alice.home)
    try:
        eventually(lambda: not bindings(sl, "alice"), "alice's binding to be dropped",
                   KEEPALIVE_S * (KEEPALIVE_FAILURES + 2) + 5, interval=0.2)
    finally:
        net.restore(alice.home)
        alice.kill()                # it still thinks it is registered: a later test starts a new one
    dropped = read_events(sl.kafka_bootstrap, types=["registration.dropped"], timeout=15,
                          until=lambda evs: any(e["contact"] == binding.contact for e in evs))
    event = next((e for e in dropped if e["contact"] == binding.contact), None)
    assert event is not None, f"no registration.dropped event for {binding.contact}: {dropped}"
    assert event["aor"] == f"alice@{DOMAIN}" and event["reason"] == "keepalive_timeout", event
    assert event["failures"] >= KEEPALIVE_FAILURES, event
    assert alice.home.nat_ip in (event.get("received") or ""), event
