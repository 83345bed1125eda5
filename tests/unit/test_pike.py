"""The sans-I/O pike (proxy/core/pike.py): window, density, block time, bounded state."""
from __future__ import annotations

import pytest

from proxy.core.pike import Pike, Verdict


def flood(pike: Pike, ip: str, n: int, now: float) -> list[Verdict]:
    return [pike.check(ip, now) for _ in range(n)]


def test_a_source_over_the_density_is_blocked_and_another_is_not():
    pike = Pike(window=2.0, density=10, block_seconds=30.0)
    verdicts = flood(pike, "192.0.2.1", 15, now=100.0)
    assert verdicts[:10] == [Verdict.ADMIT] * 10
    assert verdicts[10] is Verdict.NEWLY_BLOCKED
    assert set(verdicts[11:]) == {Verdict.BLOCKED}
    assert pike.check("192.0.2.2", 100.5) is Verdict.ADMIT
    assert pike.check("192.0.2.1", 105.0) is Verdict.BLOCKED        # a new window does not unblock
    assert [ip for ip, _, _ in pike.blocked(105.0)] == ["192.0.2.1"]
    assert pike.counters() | {} == {"requests": 17, "dropped": 6, "blocks": 1, "evicted": 0, "tracked": 2}


def test_requests_within_the_density_in_every_window_are_never_blocked():
    pike = Pike(window=1.0, density=10)
    for second in range(100):
        assert set(flood(pike, "192.0.2.1", 10, now=float(second))) == {Verdict.ADMIT}


def test_the_block_ends_after_block_seconds_unless_the_source_keeps_flooding():
    pike = Pike(window=1.0, density=5, block_seconds=10.0)
    flood(pike, "192.0.2.1", 6, now=0.0)
    flood(pike, "192.0.2.9", 6, now=0.0)
    for t in range(1, 20):                      # .9 keeps flooding, .1 stopped
        flood(pike, "192.0.2.9", 6, now=float(t))
    assert pike.check("192.0.2.1", 10.5) is Verdict.ADMIT
    assert pike.check("192.0.2.9", 20.5) is Verdict.BLOCKED
    assert pike.check("192.0.2.9", 28.5) is Verdict.BLOCKED      # last excess at 19
    assert pike.check("192.0.2.9", 29.5) is Verdict.ADMIT


def test_state_is_bounded_whatever_the_number_of_sources():
    pike = Pike(window=1.0, density=5, max_sources=100)
    for i in range(10_000):
        pike.check(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now=i / 1000)
    assert pike.counters()["tracked"] == 100
    assert pike.counters()["evicted"] == 9_900


def test_the_oldest_window_is_forgotten_first():
    pike = Pike(window=1.0, density=3, max_sources=2)
    flood(pike, "192.0.2.1", 4, now=0.0)              # blocked
    pike.check("192.0.2.2", 0.5)
    pike.check("192.0.2.1", 1.5)                      # a new window: now the youngest entry
    pike.check("192.0.2.3", 1.6)                      # evicts .2, not the blocked .1
    assert pike.check("192.0.2.1", 1.7) is Verdict.BLOCKED


def test_exempt_sources_are_never_blocked_and_matched_once():
    asked: list[str] = []

    def trusted(ip: str) -> bool:
        asked.append(ip)
        return ip == "192.0.2.1"

    pike = Pike(window=1.0, density=1, exempt=trusted)
    assert set(flood(pike, "192.0.2.1", 1000, now=0.0)) == {Verdict.ADMIT}
    assert asked == ["192.0.2.1"]


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError):
        Pike(window=0)


async def test_the_guard_drops_blocked_requests_by_default_and_answers_503_when_asked(tmp_path):
    import asyncio

    import msgspec

    from proxy.core.ports import Target
    from proxy.infra.config import Config, PikeSettings, ProxySettings
    from proxy.runtime.floodguard import FloodGuard
    from tests.unit.test_shedder import RESPONSE, request

    source = Target("udp", "192.0.2.66", 5060, None)
    for policy, answered in (("drop", 0), ("503", 1)):
        config = msgspec.structs.replace(Config(), pike=PikeSettings(density=3, policy=policy))
        guard = FloodGuard(config, tmp_path, 0)
        sent: list[bytes] = []
        guard.start(asyncio.get_running_loop(), lambda data, target: sent.append(data) or True)
        try:
            assert [guard.admit(request("OPTIONS"), source) for _ in range(4)] == [True, True, True, False]
            assert guard.admit(RESPONSE, source)                  # responses are never limited
            assert len(sent) == answered
            assert all(s.startswith(b"SIP/2.0 503") and b"Retry-After: 60" in s for s in sent)
            assert guard.state()["blocked"][0]["source"] == "192.0.2.66"
        finally:
            guard.close()

    trusted = msgspec.structs.replace(Config(), pike=PikeSettings(density=3),
                                      proxy=ProxySettings(trusted_sources=("192.0.2.0/24",)))
    guard = FloodGuard(trusted, tmp_path, 0)
    guard.start(asyncio.get_running_loop(), lambda data, target: True)
    try:
        assert all(guard.admit(request("OPTIONS"), source) for _ in range(100))
    finally:
        guard.close()
