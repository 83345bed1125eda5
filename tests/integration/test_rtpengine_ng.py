"""The ng client against a real rtpengine (userspace): ping, offer/answer rewriting, RTP both ways,
query/delete statistics, failover away from a dead instance."""
from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import AsyncIterator, Iterator

import pytest

from proxy.media.ng import Schedule
from proxy.media.relays import Relay, RelaySet
from proxy.runtime.ngclient import NgClient, NgTimeout
from tests.harness.poll import aeventually
from tests.harness.rtpengine import RtpEngine, rtpengine_available
from tests.harness.sipp import HOST, free_udp_port

pytestmark = pytest.mark.skipif(not rtpengine_available(), reason="rtpengine (Debian rtpengine-daemon) not installed")


def sdp(port: int) -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def media_port(text: str) -> int:
    found = re.search(r"^m=audio (\d+) ", text, re.M)
    assert found, text
    return int(found.group(1))


def rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + b"\xff" * 160


@pytest.fixture(scope="module")
def rtpe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtpEngine]:
    engine = RtpEngine(tmp_path_factory.mktemp("rtpe")).start()
    yield engine
    engine.stop()


@pytest.fixture
async def client(rtpe: RtpEngine) -> AsyncIterator[NgClient]:
    ng = await NgClient.open(RelaySet([Relay(rtpe.url, rtpe.ng_address)]), Schedule(timeout=0.5, retries=2))
    yield ng
    ng.close()


@pytest.fixture
def phones() -> Iterator[tuple[socket.socket, socket.socket]]:
    pair = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        s.setblocking(False)
        pair.append(s)
    yield pair[0], pair[1]
    for s in pair:
        s.close()


def drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            return got


async def test_ping_pong(client: NgClient, rtpe: RtpEngine) -> None:
    assert await client.ping(client.relays.relays[0])


async def test_call_through_rtpengine_relays_rtp_both_ways_and_reports_it(
        client: NgClient, rtpe: RtpEngine, phones: tuple[socket.socket, socket.socket]) -> None:
    alice, bob = phones
    offered = await client.offer("call-1", "alice-tag", sdp(alice.getsockname()[1]), replace=["origin"])
    assert offered.result == "ok", offered
    to_bob = media_port(offered.sdp)                     # where bob must send: rtpengine's port
    assert rtpe.port_min <= to_bob <= rtpe.port_max and "c=IN IP4 127.0.0.1" in offered.sdp
    answered = await client.answer("call-1", "alice-tag", "bob-tag", sdp(bob.getsockname()[1]))
    assert answered.result == "ok", answered
    to_alice = media_port(answered.sdp)
    assert rtpe.port_min <= to_alice <= rtpe.port_max and to_alice != to_bob

    received: dict[str, list[bytes]] = {"alice": [], "bob": []}

    def both_got_five() -> bool:
        received["alice"] += drain(alice)
        received["bob"] += drain(bob)
        return len(received["alice"]) >= 5 and len(received["bob"]) >= 5

    for seq in range(5):
        alice.sendto(rtp(seq, 0x1111), (HOST, to_alice))
        bob.sendto(rtp(seq, 0x2222), (HOST, to_bob))
    await aeventually(both_got_five, "RTP relayed both ways", timeout=5)
    assert struct.unpack("!I", received["bob"][0][8:12])[0] == 0x1111
    assert struct.unpack("!I", received["alice"][0][8:12])[0] == 0x2222

    queried = await client.query("call-1")
    assert queried.result == "ok" and queried.stats is not None
    assert queried.stats.rtp.packets >= 10
    sent_by = {s.tag: s for s in queried.stats.streams if not s.rtcp}
    assert sent_by["alice-tag"].packets >= 5 and sent_by["bob-tag"].packets >= 5
    assert sent_by["alice-tag"].endpoint == f"{HOST}:{alice.getsockname()[1]}"
    assert sent_by["alice-tag"].last_packet > 0

    deleted = await client.delete("call-1", delete_delay=0)   # rtpengine keeps it 30 s by default
    assert deleted.result == "ok"
    assert client.relays.sticky("call-1") is None
    gone = await client.request(client.relays.relays[0], {"command": "query", "call-id": "call-1"})
    assert gone.result == "error" and gone.error_reason


async def test_answer_for_an_unknown_call_is_an_error_reply(client: NgClient) -> None:
    client.relays.pick("never-offered", 0.0)
    reply = await client.answer("never-offered", "a", "b", sdp(40000))
    assert reply.result == "error" and reply.error_reason


async def test_offer_fails_over_from_a_dead_instance_and_probing_revives_it(rtpe: RtpEngine) -> None:
    dead_port = free_udp_port()                          # nothing listens here (yet)
    dead = Relay("dead", (HOST, dead_port), weight=1000)
    live = Relay(rtpe.url, rtpe.ng_address, weight=1)
    relays = RelaySet([dead, live], recheck_seconds=0.2)
    client = await NgClient.open(relays, Schedule(timeout=0.2, retries=1))
    try:
        with pytest.raises(NgTimeout):
            await client.request(dead, {"command": "ping"})
        assert not relays.is_up(dead)
        relays.alive(dead)                               # as if it had recovered: offers try it first
        offered = await client.offer("call-fo", "ft", sdp(40000))
        assert offered.result == "ok" and relays.sticky("call-fo") == live and not relays.is_up(dead)
        assert (await client.delete("call-fo")).result == "ok"
    finally:
        client.close()


async def test_a_down_instance_comes_back_after_a_probe(rtpe: RtpEngine) -> None:
    wrong = Relay("wrong-first", (HOST, rtpe.ng_port), weight=1)
    relays = RelaySet([wrong], recheck_seconds=0.1)
    client = await NgClient.open(relays, Schedule(timeout=0.2, retries=0))
    try:
        relays.failed(wrong, asyncio.get_running_loop().time())
        await aeventually(lambda: relays.is_up(wrong), "the probe ping to revive the relay", timeout=5)
    finally:
        client.close()
