"""Owner choice and hand-off between workers sharing the public UDP socket."""
from __future__ import annotations

import asyncio
import zlib

from proxy.runtime.handoff import Handoff, call_id_of, owner_of
from tests.harness.poll import aeventually

MSG = (b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
       b"i: AbC-123@host\r\nCSeq: 1 INVITE\r\n\r\nbody: call-id: not-me\r\n")


def test_call_id_found_in_any_spelling_and_case_kept():
    assert call_id_of(MSG) == b"AbC-123@host"
    assert call_id_of(MSG.replace(b"i: ", b"CALL-ID:  ")) == b"AbC-123@host"
    assert call_id_of(b"garbage") is None


def test_owner_is_stable_across_processes():
    # crc32, not hash(): every worker process must agree
    assert owner_of(MSG, 4) == zlib.crc32(b"AbC-123@host") % 4
    assert owner_of(b"no call id", 4) is None


async def test_datagrams_reach_their_owner_in_order(tmp_path):
    loop = asyncio.get_running_loop()
    got: dict[int, list] = {0: [], 1: []}
    ends = [Handoff(tmp_path, i, 2, lambda d, ip, port, i=i: got[i].append((d, ip, port)))
            for i in range(2)]
    for end in ends:
        end.start(loop)
    assert await ends[0].wait_for_siblings(1)
    owner = owner_of(MSG, 2)
    sender = ends[1 - owner]
    messages = [MSG + str(n).encode() for n in range(300)]   # more than max_dgram_qlen
    assert all(sender.route(m, "192.0.2.7", 5062) for m in messages)
    assert not ends[owner].route(MSG, "192.0.2.7", 5062)     # its own: processed locally
    await aeventually(lambda: len(got[owner]) == len(messages), "every datagram at its owner", 2,
                      interval=0.01, fail=False)
    assert [d for d, _, _ in got[owner]] == messages
    assert {(ip, port) for _, ip, port in got[owner]} == {("192.0.2.7", 5062)}
    for end in ends:
        end.close(loop)


async def test_tcp_messages_reach_the_call_owner_and_its_answers_the_connection_owner(tmp_path):
    """docs/nat.md "TCP": the reader hands a message to the Call-ID's owner, marked
    with its index; the owner's answer comes back as a write for that connection."""
    loop = asyncio.get_running_loop()
    delivered: list = []
    writes: dict[int, list] = {0: [], 1: []}
    ends = [Handoff(tmp_path, i, 2, lambda d, ip, port: None,
                    deliver_tcp=lambda d, ip, port, reader: delivered.append((d, ip, port, reader)),
                    write_tcp=lambda d, ip, port, i=i: writes[i].append((d, ip, port)))
            for i in range(2)]
    for end in ends:
        end.start(loop)
    owner = owner_of(MSG, 2)
    reader = 1 - owner
    assert ends[reader].route(MSG, "192.0.2.7", 40001, "tcp")
    await aeventually(lambda: delivered, "the message at the Call-ID owner", 2, interval=0.01, fail=False)
    assert delivered == [(MSG, "192.0.2.7", 40001, reader)]
    assert ends[owner].write_via(reader, "192.0.2.7", 40001, b"SIP/2.0 200 OK\r\n\r\n")
    await aeventually(lambda: writes[reader], "the answer at the connection owner", 2, interval=0.01, fail=False)
    assert writes == {reader: [(b"SIP/2.0 200 OK\r\n\r\n", "192.0.2.7", 40001)], owner: []}
    assert not ends[reader].write_via(owner, "192.0.2.7", 40001, b"x" * 200_000)   # too large: refused
    for end in ends:
        end.close(loop)
