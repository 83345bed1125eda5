"""RADIUS over TCP (RFC 6613, radius/transport.py): the stream's framing, and
the sender over TCP against an in-process accounting server on loopback:
many requests per write, answers in any order, bad answers, a server that
is down at first, one that drops the connection, one that breaks the framing."""
from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrad import packet as rpacket

from proxy.infra.config import RadiusServer, RadiusSettings
from radius.queue import Sender, Spool, WireEncoder, request_packet
from radius.transport import MAX_PACKET, FramingError, PacketFramer
from tests.harness.sipp import free_udp_port
from tests.unit.test_radius_sender import DICT, SECRET, records_of, reply_to, run_sender


def _packets(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    encoder = WireEncoder(DICT)
    records = [r for i in range(n) for r in records_of(f"f{i}-{'x' * rng.randrange(200)}@t")]
    return [request_packet(i % 256, encoder.encode(r.attrs), rng.randrange(5), SECRET)
            for i, r in enumerate(records)]


# --- framing ---------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40))
def test_any_split_of_the_stream_gives_the_same_packets(cuts):
    """Reads end anywhere (inside a header, inside a length field, between
    packets): the framer hands out exactly the packets sent, in order, and
    holds less than one packet between reads."""
    packets = _packets(12)
    stream = b"".join(packets)
    framer = PacketFramer()
    got: list[bytes] = []
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    for start, end in zip(bounds, bounds[1:]):
        got += framer.feed(stream[start:end])
        assert framer.pending < MAX_PACKET
    assert got == packets and framer.pending == 0


def test_one_byte_at_a_time():
    packets = _packets(3)
    framer = PacketFramer()
    got = [p for byte in b"".join(packets) for p in framer.feed(bytes([byte]))]
    assert got == packets


@pytest.mark.parametrize("length", [0, 19, MAX_PACKET + 1, 65535])
def test_a_length_outside_the_rfc_breaks_the_stream(length):
    good = _packets(1)[0]
    framer = PacketFramer()
    with pytest.raises(FramingError):
        framer.feed(good + b"\x05\x01" + length.to_bytes(2, "big") + bytes(16))
    # known only once the length field is complete: three bytes of it are not enough
    assert PacketFramer().feed(b"\x05\x01\x00") == []


# --- the sender over TCP ---------------------------------------------------------------

class _TcpServer:
    """An accounting server over TCP: frames requests, answers each read's
    requests in reverse order (RFC 6613 lets answers come in any order) in
    one write; ``bad`` answers first go with a wrong secret; ``drop_after``:
    closes the connection, unanswered, when that many requests came;
    ``garbage``: answers the first read with a broken length instead."""

    def __init__(self, bad: int = 0, drop_after: int = 0, garbage: bool = False) -> None:
        self.got: list[tuple[str, str]] = []
        self.bad, self.drop_after, self.garbage = bad, drop_after, garbage
        self.requests = 0
        self.connections = 0
        self.reads_with_several = 0

    def protocol(self) -> asyncio.Protocol:
        server = self
        self.connections += 1

        class Stream(asyncio.Protocol):
            def connection_made(self, transport) -> None:
                self.transport, self.framer = transport, PacketFramer()

            def data_received(self, data: bytes) -> None:
                packets = self.framer.feed(data)
                server.reads_with_several += len(packets) > 1
                answers = []
                for raw in packets:
                    server.requests += 1
                    if server.drop_after and server.requests >= server.drop_after:
                        server.drop_after = 0
                        self.transport.close()
                        return
                    if server.garbage:
                        server.garbage = False
                        self.transport.write(b"\x05\x00\x00\x03")
                        return
                    if server.bad:
                        server.bad -= 1
                        answers.append(reply_to(raw, b"wrong"))
                        continue
                    packet = rpacket.AcctPacket(dict=DICT, secret=SECRET, packet=raw)
                    server.got.append((packet["Acct-Session-Id"][0], packet["Acct-Status-Type"][0]))
                    answers.append(reply_to(raw))
                self.transport.write(b"".join(reversed(answers)))

        return Stream()


def _deliver(tmp_path, server: _TcpServer, *, calls: int = 20, down_first: float = 0.0,
             in_flight: int = 8) -> Sender:
    port = free_udp_port()
    config = RadiusSettings(servers=(RadiusServer(host="127.0.0.1", port=port, secret=SECRET.decode()),),
                            transport="tcp", timeout=0.2, retries=1, dead_time_s=0.3,
                            max_in_flight=in_flight)
    spool = Spool(tmp_path, encode=WireEncoder(DICT).encode)
    records = [r for i in range(calls) for r in records_of(f"c{i}@t")]

    async def listen() -> Callable[[], None]:
        listener = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", port)
        return listener.close

    def while_down(sender: Sender) -> None:      # connections refused meanwhile
        assert sender.counts["acked"] == 0 and sender.counts["tcp_connect_failures"] >= 1

    sender = uvloop.run(run_sender(spool, config, records, listen, down_first_s=down_first,
                                   while_down=while_down, limit_s=15))
    assert sender.drained and spool.pending_count() == 0
    assert sender.counts["acked"] == len(records)
    for i in range(calls):
        # a request logged whose answer a dropped connection lost goes again (at-least-once),
        # but a Stop never before its Start
        statuses = [status for session, status in server.got if session == f"c{i}@t;leg=0"]
        assert set(statuses) == {"Start", "Stop"} and statuses.index("Start") < statuses.index("Stop")
    spool.close()
    return sender


def test_many_requests_per_write_and_answers_in_any_order(tmp_path):
    server = _TcpServer()
    sender = _deliver(tmp_path, server, calls=40, in_flight=16)
    assert sorted(server.got) == sorted(set(server.got)) and len(server.got) == 80
    assert sender.counts["tcp_connects"] == 1 == server.connections
    assert sender.counts["tcp_writes"] < sender.counts["sends"] and server.reads_with_several > 0
    assert sender.counts["timeouts"] == 0 and sender.counts["stray_replies"] == 0


def test_an_answer_with_a_wrong_authenticator_is_ignored_and_the_request_goes_on_a_new_connection(tmp_path):
    server = _TcpServer(bad=2)
    sender = _deliver(tmp_path, server)
    assert sender.counts["stray_replies"] == 2 and sender.counts["timeouts"] >= 1
    assert sender.counts["tcp_connects"] >= 2 and server.connections >= 2     # never resent on the stuck one
    # what the closed connection carried may go twice: one in-flight window at most per close
    assert len(server.got) <= 40 + 8 * sender.counts["timeouts"]


def test_a_server_down_at_first_gets_everything_once_it_listens(tmp_path):
    sender = _deliver(tmp_path, _TcpServer(), down_first=0.5)
    assert sender.counts["failovers"] >= 1 and sender.counts["lost"] >= 1


def test_a_connection_the_server_drops_is_reopened_and_its_requests_sent_again(tmp_path):
    server = _TcpServer(drop_after=5)
    sender = _deliver(tmp_path, server)
    assert sender.counts["lost"] >= 1 and server.connections >= 2


def test_an_answer_that_breaks_the_framing_closes_the_connection(tmp_path):
    server = _TcpServer(garbage=True)
    sender = _deliver(tmp_path, server)
    assert sender.counts["errors"] == 1 and sender.counts["lost"] >= 1 and server.connections >= 2


def test_requests_waiting_for_a_connection_stay_bounded():
    """While the server is down, resends pile up behind the connect pause;
    those the sender gave up on are dropped, so at most one Identifier space
    of packets waits (plus the one being added)."""
    from collections import Counter

    from radius.transport import HELD_MAX, WAITING, TcpLink

    async def run() -> tuple[TcpLink, int]:
        losses = 0
        live: set[bytes] = set()

        def lost() -> None:
            nonlocal losses
            losses += 1

        link = TcpLink("127.0.0.1", free_udp_port(), Counter(), timeout=0.5, answer=lambda p: None,
                       read_done=lambda: None, lost=lost, current=lambda p: p in live)
        await link.open(asyncio.get_running_loop())
        first = request_packet(0, b"", 0, SECRET)
        live.add(first)
        link.send(first)                                # nothing listens: refused, then a pause
        for _ in range(200):
            if link.state is WAITING:
                break
            await asyncio.sleep(0.01)
        assert link.state is WAITING and losses == 1
        most = 0
        for n in range(3000):                           # a request resent over and over: only its last is current
            packet = request_packet(n % 256, n.to_bytes(4, "big"), 0, SECRET)
            live.discard(next(iter(live), b""))
            live.add(packet)
            link.send(packet)
            most = max(most, len(link._held))
        link.close()
        return link, most

    link, most = uvloop.run(run())
    assert most <= HELD_MAX + 1 and link._held == []
