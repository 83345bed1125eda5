"""rtpengine ng round-trip time through our client: ping and offer/answer/delete, sequentially.

    PYTHONPATH=. python bench/ng_rtt.py [N]

Starts a private rtpengine (tests/harness/rtpengine.py), sends N pings and N
offer/answer/query/delete cycles one at a time, prints median and p99 per
command in milliseconds.  Measures the whole path: bencode, the asyncio edge,
loopback UDP, rtpengine's work.
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from proxy.media.ng import Schedule
from proxy.media.relays import Relay, RelaySet
from proxy.runtime.ngclient import NgClient
from tests.harness.rtpengine import RtpEngine

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


async def run(rtpe: RtpEngine, n: int) -> dict[str, list[float]]:
    relay = Relay(rtpe.url, rtpe.ng_address)
    client = await NgClient.open(RelaySet([relay]), Schedule(timeout=1.0, retries=2))
    times: dict[str, list[float]] = {"ping": [], "offer": [], "answer": [], "query": [], "delete": []}

    async def timed(name: str, call):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        reply = await call
        times[name].append((time.perf_counter() - start) * 1000)
        assert reply is True or reply.ok, (name, reply)

    try:
        for i in range(n):
            await timed("ping", client.ping(relay))
            call = f"bench-{i}"
            await timed("offer", client.offer(call, "a", SDP.format(port=40000 + 2 * (i % 1000))))
            await timed("answer", client.answer(call, "a", "b", SDP.format(port=50000 + 2 * (i % 1000))))
            await timed("query", client.query(call))
            await timed("delete", client.delete(call, delete_delay=0))
    finally:
        client.close()
    return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        rtpe = RtpEngine(Path(tmp), span=200).start()
        try:
            times = asyncio.run(run(rtpe, n))
        finally:
            rtpe.stop()
    print(f"rtpengine ng round trip, {n} sequential requests each (ms):")
    for name, values in times.items():
        values.sort()
        print(f"  {name:7s} median {statistics.median(values):6.3f}  p99 {values[int(len(values) * 0.99) - 1]:6.3f}"
              f"  max {values[-1]:6.3f}")


if __name__ == "__main__":
    main()
