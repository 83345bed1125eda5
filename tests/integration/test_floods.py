"""TCP limits and the pike against a real proxy process (docs/floods.md)."""
from __future__ import annotations

import json
import time

import pytest

from tests.harness.floods import (
    ProxyProcess,
    closed_by_peer,
    options,
    options_request,
    still_open,
    tcp_client,
    udp_client,
)
from tests.harness.poll import eventually

TCP_TIMEOUTS = "[tcp]\nidle_timeout_seconds = 0.5\nmessage_timeout_seconds = 1.0\n"


@pytest.fixture
def proxy(tmp_path, broker, request):
    config = getattr(request, "param", TCP_TIMEOUTS)
    with ProxyProcess(tmp_path, broker.bootstrap, config) as px:
        yield px


def test_idle_tcp_connection_is_closed_after_the_idle_timeout(proxy):
    with tcp_client(proxy.addr) as sock:
        assert closed_by_peer(sock, timeout=10) == b""


def test_tcp_connection_in_use_is_answered_and_kept(proxy):
    with tcp_client(proxy.addr) as sock:
        host, port = sock.getsockname()
        sock.sendall(options_request(proxy.addr, host, port, "TCP"))
        sock.settimeout(5)
        assert sock.recv(65535).startswith(b"SIP/2.0 200")


def test_slowloris_header_is_closed_after_the_message_timeout(proxy):
    with tcp_client(proxy.addr) as sock:
        host, port = sock.getsockname()
        request = options_request(proxy.addr, host, port, "TCP")
        sent = 0

        def dribble_until_closed() -> bool:
            # a byte every 0.1 s keeps the connection from being idle, never completes the header
            nonlocal sent
            try:
                sock.sendall(request[sent:sent + 1])
            except OSError:
                return True
            sent += 1
            return not still_open(sock) or sent >= len(request) - 4

        eventually(dribble_until_closed, timeout=10, interval=0.1)
        assert sent < len(request) - 4, "the header was never refused"
        assert closed_by_peer(sock, timeout=2) is not None


def test_header_whose_body_never_arrives_gets_400_and_is_closed(proxy):
    with tcp_client(proxy.addr) as sock:
        host, port = sock.getsockname()
        sock.sendall(options_request(proxy.addr, host, port, "TCP", body=b"v=0\r\n", content_length=200))
        answer = closed_by_peer(sock, timeout=10)
        assert answer is not None, "connection held open"
        assert answer.startswith(b"SIP/2.0 400"), answer


def test_message_over_the_size_cap_gets_513_and_is_closed(proxy):
    with tcp_client(proxy.addr) as sock:
        host, port = sock.getsockname()
        sock.sendall(options_request(proxy.addr, host, port, "TCP", content_length=10_000_000))
        answer = closed_by_peer(sock, timeout=10)
        assert answer is not None and answer.startswith(b"SIP/2.0 513"), answer


@pytest.mark.parametrize("proxy", ["[tcp]\nmax_connections_per_ip = 3\n"], indirect=True)
def test_per_source_cap_refuses_the_next_connection(proxy):
    held = [tcp_client(proxy.addr) for _ in range(3)]
    try:
        for sock in held:          # each one registered before the next is made
            host, port = sock.getsockname()
            sock.sendall(options_request(proxy.addr, host, port, "TCP"))
            sock.settimeout(5)
            assert sock.recv(65535).startswith(b"SIP/2.0 200")
        with tcp_client(proxy.addr) as extra:
            assert closed_by_peer(extra, timeout=5) == b""
        with tcp_client(proxy.addr, source="127.0.0.2") as other:     # another source still gets in
            assert closed_by_peer(other, timeout=0.5) is None
        assert all(still_open(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("proxy", ["[tcp]\nmax_connections = 3\nmax_connections_per_ip = 2\n"], indirect=True)
def test_total_cap_refuses_the_next_connection(proxy):
    held = [tcp_client(proxy.addr, source=src) for src in ("127.0.0.2", "127.0.0.2", "127.0.0.3")]
    try:
        for sock in held:
            host, port = sock.getsockname()
            sock.sendall(options_request(proxy.addr, host, port, "TCP"))
            sock.settimeout(5)
            assert sock.recv(65535).startswith(b"SIP/2.0 200")
        with tcp_client(proxy.addr, source="127.0.0.4") as extra:
            assert closed_by_peer(extra, timeout=5) == b""
        assert all(still_open(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()


PIKE = "[pike]\nsampling_seconds = 2.0\ndensity = 50\nblock_seconds = 30\npublish_seconds = 0.2\n"


@pytest.mark.parametrize("proxy", [PIKE], indirect=True)
def test_pike_blocks_a_flooding_source_and_not_another(proxy):
    assert options(proxy.addr, source="127.0.0.2") is not None     # answered before the flood
    with udp_client("127.0.0.2") as flood:
        host, port = flood.getsockname()
        for _ in range(500):
            flood.sendto(options_request(proxy.addr, host, port), proxy.addr)

    def listed() -> list[dict]:
        res = proxy.cli("pike", "--json")
        assert res.returncode == 0, res.stderr
        states = json.loads(res.stdout)
        return [b for s in states for b in s["blocked"] if b["source"] == "127.0.0.2"]

    assert eventually(listed, "127.0.0.2 listed by `sipledger pike`", timeout=10)
    assert options(proxy.addr, source="127.0.0.2", timeout=1.0) is None
    answer = options(proxy.addr, source="127.0.0.3")
    assert answer is not None and answer.startswith(b"SIP/2.0 200")
    table = proxy.cli("pike")
    assert "127.0.0.2" in table.stdout and "127.0.0.3" not in table.stdout


def test_flood_is_not_logged_per_packet(tmp_path, broker):
    with ProxyProcess(tmp_path, broker.bootstrap, PIKE) as px, udp_client("127.0.0.5") as flood:
        host, port = flood.getsockname()
        for _ in range(2000):
            flood.sendto(options_request(px.addr, host, port), px.addr)
        eventually(lambda: "blocking 127.0.0.5" in px.stderr(), "the one pike log line", timeout=10)
        time.sleep(0.5)               # negative check: no more lines for the rest of the flood
        assert px.stderr().count("pike:") == 1
        assert "Traceback" not in px.stderr()




@pytest.mark.parametrize("proxy", ["[proxy]\ntrusted_sources = [\"127.0.0.7/32\"]\n"
                                   "[tcp]\nmax_connections_per_ip = 1\n"], indirect=True)
def test_trusted_sources_are_exempt_from_the_per_source_cap(proxy):
    held = [tcp_client(proxy.addr, source="127.0.0.7") for _ in range(3)]
    try:
        for sock in held:
            host, port = sock.getsockname()
            sock.sendall(options_request(proxy.addr, host, port, "TCP"))
            sock.settimeout(5)
            assert sock.recv(65535).startswith(b"SIP/2.0 200")
    finally:
        for sock in held:
            sock.close()
