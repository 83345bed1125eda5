"""Choosing an rtpengine: weights, stickiness, failover, re-probing."""
from __future__ import annotations

import pytest

from proxy.infra.config import MediaSettings, RtpengineSettings
from proxy.media.relays import Relay, RelaySet, relays_from_settings

A = Relay("a", ("10.0.0.1", 2223), weight=3)
B = Relay("b", ("10.0.0.2", 2223), weight=1)
STANDBY = Relay("s", ("10.0.0.3", 2223), weight=0)


def test_new_calls_follow_the_weights_and_every_worker_agrees() -> None:
    relays = RelaySet([A, B, STANDBY])
    picks = [relays.pick(f"call-{i}", 0.0) for i in range(4000)]
    share_a = picks.count(A) / len(picks)
    assert 0.70 < share_a < 0.80 and picks.count(STANDBY) == 0
    other_worker = RelaySet([A, B, STANDBY])
    assert [other_worker.pick(f"call-{i}", 0.0) for i in range(4000)] == picks


def test_a_call_sticks_to_its_relay_for_later_commands() -> None:
    relays = RelaySet([A, B])
    first = relays.pick("c1", 0.0)
    assert first is not None and relays.sticky("c1") == first
    relays.failed(first, 1.0)
    assert relays.sticky("c1") == first                 # answer/delete still go where the media is
    moved = relays.pick("c1", 1.0)                      # a fresh offer fails over
    assert moved is not None and moved != first and relays.sticky("c1") == moved
    relays.forget("c1")
    assert relays.sticky("c1") is None


def test_all_down_gives_none_and_probing_brings_them_back() -> None:
    relays = RelaySet([A, B], recheck_seconds=10.0)
    relays.failed(A, 0.0)
    relays.failed(B, 5.0)
    assert relays.pick("c1", 6.0) is None and relays.live() == []
    assert relays.probes_due(9.0) == []
    assert relays.probes_due(10.0) == [A]
    assert relays.probes_due(12.0) == []                # A was just probed; due again at 20
    assert relays.probes_due(15.0) == [B]
    relays.alive(A)
    assert relays.pick("c1", 16.0) == A and relays.probes_due(100.0) == [B]


def test_explicit_choice_including_a_standby() -> None:
    relays = RelaySet([A, B, STANDBY])
    assert relays.pick("c1", 0.0, explicit="s") == STANDBY
    relays.failed(STANDBY, 0.0)
    assert relays.pick("c2", 0.0, explicit="s") is None
    assert relays.pick("c3", 0.0, explicit="nope") is None


def test_sticky_table_is_bounded() -> None:
    relays = RelaySet([A], max_calls=3)
    for i in range(5):
        relays.pick(f"c{i}", 0.0)
    assert [relays.sticky(f"c{i}") for i in range(5)] == [None, None, A, A, A]


def test_from_settings_and_bad_sets() -> None:
    relays = relays_from_settings(MediaSettings(rtpengines=(
        RtpengineSettings("udp:127.0.0.1:2223", 2), RtpengineSettings("udp:[::1]:2224", 1))))
    assert [(r.address, r.weight) for r in relays.relays] == [(("127.0.0.1", 2223), 2), (("::1", 2224), 1)]
    with pytest.raises(ValueError):
        RelaySet([])
    with pytest.raises(ValueError):
        RelaySet([A, A])


def test_config_rules_for_media() -> None:
    import msgspec

    from proxy.infra.config import Config, checks
    assert not [c for c in checks(Config()) if not c[1]] and Config().media.enabled is False
    bad = msgspec.convert({"media": {"enabled": True, "timeout_seconds": 0, "rtpengines": [
        {"url": "tcp:127.0.0.1:1", "weight": 0}, {"url": "udp:example.com:2223"}, {"url": "udp:127.0.0.1:0"},
        {"url": "udp:127.0.0.1:0"}]}}, Config)
    failed = {key for key, ok, _ in checks(bad) if not ok}
    assert failed == {"media.rtpengines", "media.rtpengines[0].url", "media.rtpengines[1].url",
                      "media.rtpengines[2].url", "media.rtpengines[3].url", "media.timeout_seconds"}
