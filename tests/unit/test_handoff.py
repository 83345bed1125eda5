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
