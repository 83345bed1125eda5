"""The load shedder (proxy/core/shedder.py, proxy/runtime/floodguard.py): new requests
refused while the worker is behind, calls in progress untouched."""
from __future__ import annotations

import asyncio
import socket
import time

import msgspec

from proxy.core.ports import Target
from proxy.core.shedder import AnswerBudget, Kind, LoadShedder, classify
from proxy.infra.config import Config, OverloadSettings, PikeSettings
from proxy.runtime.floodguard import FloodGuard


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
    shedder = LoadShedder(max_lag=0.2, resume_lag=0.05)
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
        Config(), overload=OverloadSettings(max_lag_ms=100, resume_lag_ms=20, sample_ms=20, retry_after_seconds=7),
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
        Config(), overload=OverloadSettings(max_lag_ms=100, resume_lag_ms=50, sample_ms=10))
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


def test_a_full_receive_queue_sheds_even_with_a_punctual_loop():
    shedder = LoadShedder(max_lag=0.2, resume_lag=0.05, max_fill=0.3, resume_fill=0.05)
    assert shedder.observe(0.0, 0.5) and shedder.shedding
    assert not shedder.admit(request("INVITE"))
    assert not shedder.observe(0.0, 0.1)                 # lag fine, queue still draining
    assert shedder.observe(0.0, 0.01) and not shedder.shedding


async def test_the_guard_watches_a_real_udp_receive_queue(tmp_path):
    config = msgspec.structs.replace(Config(), overload=OverloadSettings(sample_ms=10))
    guard = FloodGuard(config, tmp_path, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as queue, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        queue.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        queue.bind(("127.0.0.1", 0))
        guard.watch(queue)
        guard.start(asyncio.get_running_loop(), lambda data, target: True)
        try:
            for _ in range(400):                         # nobody reads: the queue fills up
                sender.sendto(b"x" * 500, queue.getsockname())
            for _ in range(100):
                await asyncio.sleep(0.01)
                if guard.shedder is not None and guard.shedder.shedding:
                    break
            assert not guard.admit(request("INVITE"), Target("udp", "192.0.2.10", 5062, None))
            assert guard.state()["overload"]["queue_percent"] > 30
        finally:
            guard.close()


def test_refusals_are_answered_within_a_budget_per_second():
    budget = AnswerBudget(3)
    assert [budget.allow(10.0 + i / 10) for i in range(5)] == [True, True, True, False, False]
    assert budget.allow(11.0) and budget.dropped == 2
