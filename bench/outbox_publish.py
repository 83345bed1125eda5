"""Sustained events/s through outbox.append → flush → EventPublisher → Tansu.

Like the proxy's runtime: each loop iteration appends a chunk of real encoded
events (a call's life: invite.received … call.bye), flushes the outbox and
wakes the publisher, all in one event loop.  Reports the rate from the first
append until the outbox is empty, and this process's CPU per event (the broker
runs in its own process and is not counted).

    .venv/bin/python bench/outbox_publish.py [--events 200000] [--rate 0] [--bootstrap HOST:PORT]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import resource
import sys
import tempfile
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.broker import EmbeddedBroker  # noqa: E402
from proxy.contract import events  # noqa: E402
from proxy.events.outbox import Outbox  # noqa: E402
from proxy.events.publisher import EventPublisher  # noqa: E402
from proxy.infra.config import KafkaSettings  # noqa: E402
from proxy.infra.kafka import ensure_topics  # noqa: E402

TOPIC = "bench.sip.events"
BACKLOG_LIMIT = 50_000  # appending pauses above this: measure what is sustained, not buffered


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def call_lives():
    """Endless encoded (key, value) pairs: the example call's events, each call new."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from gen_event_examples import example_events
    template = [e for e in example_events() if not isinstance(e, (events.CallFailed, events.LegFailed))]
    for n in itertools.count():
        call_id = f"{n:x}-bench@192.0.2.10"
        for event in template:
            event = msgspec.structs.replace(event, id=events.new_event_id(), call_id=call_id)
            yield call_id.encode(), events.encode(event)


async def run(settings: KafkaSettings, total: int, rate: float, chunk: int, batch: int) -> None:
    await ensure_topics(settings, {TOPIC: settings.partitions})
    source = call_lives()
    records = [next(source) for _ in range(total)]  # encoding is the proxy's cost, not measured here
    size = sum(len(k) + len(v) for k, v in records) / total
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "outbox.db")
        publisher = EventPublisher(outbox, settings, TOPIC, batch=batch)
        publisher.start()
        loop = asyncio.get_running_loop()
        start, cpu_start = loop.time(), cpu_seconds()
        for i in range(0, total, chunk):
            for key, value in records[i:i + chunk]:
                outbox.append(key, value)
            outbox.flush()
            publisher.wake()
            if rate:
                await asyncio.sleep(max(0.0, start + (i + chunk) / rate - loop.time()))
            else:
                await asyncio.sleep(0)
            while outbox.count() > BACKLOG_LIMIT:
                await asyncio.sleep(0.001)
        while outbox.count():
            await asyncio.sleep(0.001)
        elapsed, cpu = loop.time() - start, cpu_seconds() - cpu_start
        await publisher.stop()
        outbox.close()
    assert publisher.published == total, (publisher.published, total)
    print(f"{total} events of {size:.0f} B, chunk {chunk}, batch {batch}, "
          f"target {'max' if not rate else f'{rate:.0f}/s'}")
    print(f"  {total / elapsed:,.0f} events/s sustained; "
          f"{cpu / total * 1e6:.1f} µs CPU per event in this process ({cpu / elapsed:.0%} of a core); "
          f"{publisher.failed_attempts} failed attempts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=0, help="events/s to offer; 0 = as fast as it goes")
    parser.add_argument("--chunk", type=int, default=200, help="events appended per loop iteration")
    parser.add_argument("--batch", type=int, default=1000, help="publisher batch (rows per delivery)")
    parser.add_argument("--bootstrap", help="an existing broker; default: start an embedded one")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.no_uvloop:
        import uvloop
        uvloop.install()
    if args.bootstrap:
        asyncio.run(run(KafkaSettings(bootstrap_servers=args.bootstrap), args.events, args.rate, args.chunk, args.batch))
        return
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker:
        asyncio.run(run(KafkaSettings(bootstrap_servers=broker.bootstrap), args.events, args.rate, args.chunk, args.batch))


if __name__ == "__main__":
    main()
