"""The load shedder (proxy/core/shedder.py, proxy/runtime/floodguard.py): new requests
refused while the worker is behind, calls in progress untouched."""
from __future__ import annotations

import asyncio
import socket
import struct
import time

import msgspec

from proxy.core.ports import Target
from proxy.core.shedder import AnswerBudget, Kind, LoadShedder, classify
from proxy.infra.config import Config, OverloadSettings, PikeSettings
from proxy.runtime.floodguard import PROBE_MAGIC, FloodGuard


def request(method: str, to_tag: str | None = None, to_name: str = "To") -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    cseq_method = "INVITE" if method in ("ACK", "CANCEL") else method
    return (f"{method} sip:bob@example.test SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc;rport\r\n"
            "From: <sip:alice@example.test>;tag=a1\r\n"
            f"{to_name}: <sip:bob@example.test>{tag}\r\n"
            f"Call-ID: c1\r\nCSeq: 1 {cseq_method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


RESPONSE = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n")


def test_classify_from_raw_bytes():
    assert classify(request("INVITE")) is Kind.INITIAL
    assert classify(request("REGISTER")) is Kind.INITIAL
    assert classify(request("OPTIONS")) is Kind.INITIAL
    assert classify(request("INVITE", "b2")) is Kind.CONTINUING           # re-INVITE
    assert classify(request("BYE", "b2", to_name="t")) is Kind.CONTINUING  # compact form
    assert classify(request("ACK")) is Kind.CONTINUING
    assert classify(request("CANCEL")) is Kind.CONTINUING
    assert classify(RESPONSE) is Kind.RESPONSE


def test_behind_sheds_new_requests_and_keeps_dialogs_flowing():
    shedder = LoadShedder(max_delay=0.2, resume_delay=0.05)
    assert shedder.admit(request("INVITE"))
    assert shedder.observe(0.3) and shedder.shedding
    assert not shedder.admit(request("INVITE"))
    assert not shedder.admit(request("REGISTER"))
    for kept in (request("BYE", "b2"), request("ACK", "b2"), request("CANCEL"), request("INVITE", "b2"), RESPONSE):
        assert shedder.admit(kept)
    assert not shedder.observe(0.1) and shedder.shedding                 # hysteresis
    assert shedder.observe(0.01) and not shedder.shedding
    assert shedder.admit(request("INVITE"))
    assert shedder.counters()["shed"] == 2 and shedder.counters()["episodes"] == 1


async def test_a_blocked_event_loop_gets_503_with_retry_after_for_a_new_invite(tmp_path):
    config = msgspec.structs.replace(
        Config(), overload=OverloadSettings(max_delay_ms=100, resume_delay_ms=20, sample_ms=20, retry_after_seconds=7),
        pike=PikeSettings(enabled=False))
    guard = FloodGuard(config, tmp_path, 0)
    sent: list[tuple[bytes, Target]] = []
    guard.start(asyncio.get_running_loop(), lambda data, target: sent.append((data, target)) or True)
    source = Target("udp", "192.0.2.10", 5062, None)
    try:
        assert guard.admit(request("INVITE"), source)
        time.sleep(0.3)                       # the loop is stuck: the lag timer is overdue
        assert not guard.admit(request("INVITE"), source)
        assert guard.admit(request("BYE", "b2"), source)
        assert guard.admit(RESPONSE, source)
        (answer, target), = sent
        assert answer.startswith(b"SIP/2.0 503") and b"Retry-After: 7\r\n" in answer
        assert target == source               # to the source address, not the Via
    finally:
        guard.close()


async def test_shedding_ends_when_the_loop_catches_up(tmp_path):
    config = msgspec.structs.replace(
        Config(), overload=OverloadSettings(max_delay_ms=100, resume_delay_ms=50, sample_ms=10))
    guard = FloodGuard(config, tmp_path, 0)
    guard.start(asyncio.get_running_loop(), lambda data, target: True)
    source = Target("udp", "192.0.2.10", 5062, None)
    try:
        time.sleep(0.3)
        assert not guard.admit(request("INVITE"), source)
        for _ in range(200):                  # a few timer ticks on an idle loop
            await asyncio.sleep(0.01)
            if guard.shedder is not None and not guard.shedder.shedding:
                break
        assert guard.admit(request("INVITE"), source)
    finally:
        guard.close()


async def test_a_probe_that_waited_in_the_receive_queue_sheds_with_a_punctual_loop(tmp_path):
    config = msgspec.structs.replace(Config(), overload=OverloadSettings(max_delay_ms=100, sample_ms=1000))
    guard = FloodGuard(config, tmp_path, 0, key=b"k" * 16)
    guard.start(asyncio.get_running_loop(), lambda data, target: True)
    source = Target("udp", "127.0.0.1", 40000, None)
    try:
        stale = PROBE_MAGIC + b"k" * 16 + struct.pack("!d", time.monotonic() - 0.5)
        forged = PROBE_MAGIC + b"x" * 16 + struct.pack("!d", time.monotonic() - 0.5)
        assert not guard.admit(forged, source)           # swallowed, and without effect
        assert guard.admit(request("INVITE"), source)
        guard.timed(lambda data, target: time.sleep(0.05), b"", source)   # busy with admitted work
        assert not guard.admit(stale, source)            # sat 0.5 s in the queue
        assert not guard.admit(request("INVITE"), source)
        assert guard.admit(request("BYE", "b2"), source)
        assert guard.probes_seen == 1
    finally:
        guard.close()


async def test_the_guard_probes_a_real_udp_socket(tmp_path):
    config = msgspec.structs.replace(Config(), overload=OverloadSettings(sample_ms=10))
    guard = FloodGuard(config, tmp_path, 0)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        guard.watch(sock)

        class Reader(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                guard.admit(data, Target("udp", addr[0], addr[1], None))

        transport, _ = await loop.create_datagram_endpoint(Reader, sock=sock)
        guard.start(loop, lambda data, target: True)
        try:
            for _ in range(200):
                await asyncio.sleep(0.01)
                if guard.probes_seen >= 3:
                    break
            assert guard.probes_seen >= 3 and guard.state()["overload"]["probes_seen"] >= 3
            assert guard.admit(request("INVITE"), Target("udp", "192.0.2.1", 5060, None))
        finally:
            guard.close()
            transport.close()


def test_a_queue_of_junk_is_no_reason_to_shed():
    shedder = LoadShedder(max_delay=0.2, resume_delay=0.05, min_busy=0.5)
    assert not shedder.observe(0.0, 0.5, busy=0.1) and not shedder.shedding   # time went to pike drops
    assert shedder.observe(0.0, 0.5, busy=0.9) and shedder.shedding            # time went to requests
    assert not shedder.observe(0.0, 0.1, busy=0.0) and shedder.shedding       # hysteresis
    assert shedder.observe(0.0, 0.01, busy=0.0) and not shedder.shedding


def test_refusals_are_answered_within_a_budget_per_second():
    budget = AnswerBudget(3)
    assert [budget.allow(10.0 + i / 10) for i in range(5)] == [True, True, True, False, False]
    assert budget.allow(11.0) and budget.dropped == 2
