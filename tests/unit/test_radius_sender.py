"""The RADIUS sender's wire (radius/queue.py): request and reply
authenticators, records stored in wire form, and the sender against an
in-process accounting server on loopback (answers, bad answers, a server
that is down and comes back)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import pytest
import uvloop
from pyrad import packet as rpacket
from pyrad.dictionary import Dictionary

from bench.cdr_pipeline import call_events
from proxy.contract.callfold import fold
from proxy.infra.config import RadiusServer, RadiusSettings
from radius import DICTIONARY
from radius.queue import Sender, Spool, WireEncoder, reply_matches, request_packet
from radius.records import Context, Progress, plan
from tests.harness.sipp import free_udp_port

T0 = 1_767_225_600_000
SECRET = b"s3cret"
DICT = Dictionary(str(DICTIONARY))


def records_of(call_id: str) -> list:
    return plan(fold(call_events("answered_caller_bye", call_id, T0, scale=0.01)), Progress(), Context())[0]


def reply_to(request: bytes, secret: bytes = SECRET, code: int = rpacket.AccountingResponse) -> bytes:
    """The server's answer as pyrad builds it (its Response Authenticator)."""
    packet = rpacket.AcctPacket(dict=DICT, secret=secret, packet=request)
    reply = packet.CreateReply()
    reply.code = code
    return reply.ReplyPacket()


def test_a_reply_matches_its_own_request_only():
    attrs = WireEncoder(DICT).encode(records_of("c@t")[0].attrs)
    first, second = request_packet(7, attrs, 0, SECRET), request_packet(7, attrs, 1, SECRET)
    assert rpacket.AcctPacket(dict=DICT, secret=SECRET, packet=first).VerifyAcctRequest()
    reply = reply_to(first)
    assert reply_matches(reply, first[4:20], SECRET)
    assert not reply_matches(reply, second[4:20], SECRET)           # the same Identifier, used again
    assert not reply_matches(reply_to(first, b"other"), first[4:20], SECRET)
    assert not reply_matches(reply[:19], first[4:20], SECRET)       # shorter than its header
    assert not reply_matches(reply[:2] + b"\x10\x00" + reply[4:], first[4:20], SECRET)  # length beyond the datagram


def test_a_long_call_id_fits_the_cisco_vendor_attribute_too():
    """``call-id=<Call-ID>`` goes in a Cisco VSA, 6 bytes shorter than a string."""
    encoder = WireEncoder(DICT)
    for record in records_of("x" * 250 + "@t"):
        raw = request_packet(1, encoder.encode(record.attrs), 0, SECRET)
        back = rpacket.AcctPacket(dict=DICT, secret=SECRET, packet=raw)
        assert back["Cisco-AVPair"][0].startswith("call-id=xxx") and len(back["Cisco-AVPair"][0]) == 247


def test_records_are_stored_as_they_go_on_the_wire(tmp_path):
    encoder = WireEncoder(DICT)
    records = records_of("c@t")
    odd = [msgspec.structs.replace(records[0], key="odd", attrs=records[0].attrs + (("No-Such-Attribute", "x"),))]
    spool = Spool(tmp_path, encode=encoder.encode)
    added = spool.commit(records + odd)
    assert [e.wire for e in added[:2]] == [encoder.encode(r.attrs) for r in records]
    assert all(e.wire == b"" for e in added[2:])  # not encodable: kept as pairs, the sender reports it
    spool.close()
    again = Spool(tmp_path)
    stored = again.pending()
    assert [e.wire for e in stored[:2]] == [e.wire for e in added[:2]] and stored[0].attrs == ()
    assert [e.attrs for e in stored[2:]] == [r.attrs for r in odd] and stored[2].wire == b""
    again.close()


class _Server(asyncio.DatagramProtocol):
    """An accounting server: answers every request (or, ``bad`` times first,
    with a wrong secret), remembers what it got."""

    def __init__(self, bad: int = 0) -> None:
        self.got: list[tuple[str, int]] = []
        self.bad = bad
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        assert self.transport is not None
        packet = rpacket.AcctPacket(dict=DICT, secret=SECRET, packet=data)
        if self.bad:
            self.bad -= 1
            self.transport.sendto(reply_to(data, b"wrong"), addr)
            return
        self.got.append((packet["Acct-Session-Id"][0], packet["Acct-Status-Type"][0]))
        self.transport.sendto(reply_to(data), addr)


async def _drain(sender: Sender, limit_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not sender.drained and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def run_sender(spool: Spool, settings: RadiusSettings, records: list, listen: Callable[[], Awaitable[Callable]],
                     *, down_first_s: float = 0.0, while_down: Callable[[Sender], None] | None = None,
                     limit_s: float = 10.0) -> Sender:
    """The worker's sender on this loop until every record is acknowledged (or
    ``limit_s``): the records queued at once; the server down for
    ``down_first_s`` (then ``while_down(sender)`` checks what that did), then
    ``listen()`` starts it and returns what stops it."""
    sender = Sender(spool, settings, DICT)
    await sender.start()
    task = asyncio.create_task(sender.run())
    sender.add(spool.commit(records))
    if down_first_s:
        await asyncio.sleep(down_first_s)
        if while_down is not None:
            while_down(sender)
    stop = await listen()
    try:
        await _drain(sender, limit_s)
    finally:
        await sender.close()
        task.cancel()
        await asyncio.wait([task])
        stop()
    return sender


@pytest.mark.parametrize("down_first", [False, True])
def test_the_sender_delivers_in_order_and_through_a_server_outage(tmp_path, down_first):
    """On uvloop, as the worker runs: every record acknowledged once, each
    session's in order; replies with a wrong authenticator are ignored (the
    request times out and goes again); a server that was down at first (its
    port closed) gets everything once it listens."""
    port = free_udp_port()
    settings = RadiusSettings(servers=(RadiusServer(host="127.0.0.1", port=port, secret=SECRET.decode()),),
                              timeout=0.1, retries=1, dead_time_s=0.2, max_in_flight=4)
    spool = Spool(tmp_path, encode=WireEncoder(DICT).encode)
    records = [r for i in range(6) for r in records_of(f"c{i}@t")]
    server = _Server(bad=2)

    async def listen() -> Callable[[], None]:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: server, local_addr=("127.0.0.1", port))
        return transport.close

    def while_down(sender: Sender) -> None:      # sends to a closed port: nothing answers
        assert sender.counts["acked"] == 0 and sender.counts["failovers"] >= 1

    sender = uvloop.run(run_sender(spool, settings, records, listen, down_first_s=0.5 if down_first else 0.0,
                                   while_down=while_down))
    assert sender.drained and spool.pending_count() == 0
    assert sender.counts["stray_replies"] == 2 and sender.counts["acked"] == len(records)
    assert sorted(server.got) == sorted(set(server.got)) and len(server.got) == len(records)
    for i in range(6):
        assert [status for session, status in server.got if session == f"c{i}@t;leg=0"] == ["Start", "Stop"]
    spool.close()
