"""The UDP endpoint's view of senders (proxy/runtime/transport.py)."""
from __future__ import annotations

from proxy.core.ports import Target
from proxy.runtime import transport
from proxy.runtime.transport import UdpEndpoint


def _endpoint() -> tuple[UdpEndpoint, list[tuple[bytes, Target]]]:
    got: list[tuple[bytes, Target]] = []
    return UdpEndpoint(lambda data, source: got.append((data, source))), got


def test_each_datagram_is_delivered_with_its_source_and_socket():
    endpoint, got = _endpoint()
    endpoint.datagram_received(b"a", ("192.0.2.1", 5060))
    endpoint.datagram_received(b"b", ("192.0.2.1", 5062))
    endpoint.datagram_received(b"c", ("2001:db8::1", 5060, 0, 0))
    endpoint.datagram_received(b"d", ("192.0.2.1", 5060))
    assert [(d, s.host, s.port, s.conn, s.transport) for d, s in got] == [
        (b"a", "192.0.2.1", 5060, endpoint.id, "udp"), (b"b", "192.0.2.1", 5062, endpoint.id, "udp"),
        (b"c", "2001:db8::1", 5060, endpoint.id, "udp"), (b"d", "192.0.2.1", 5060, endpoint.id, "udp")]
    assert got[3][1] is got[0][1]                       # the same sender's Target is reused


def test_remembered_senders_stay_bounded(monkeypatch):
    monkeypatch.setattr(transport, "MAX_SOURCES", 10)
    endpoint, got = _endpoint()
    for port in range(1000, 1100):                      # spoofed source ports
        endpoint.datagram_received(b"x", ("198.51.100.7", port))
    assert len(endpoint._sources) <= 10
    assert [s.port for _, s in got] == list(range(1000, 1100))
