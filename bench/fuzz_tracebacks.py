"""Tracebacks per 10,000 fuzzed SIP messages sent to a real proxy worker (goal: 0).

    python bench/fuzz_tracebacks.py [--repo PATH] [--count 10000] [--seed 1] [--settle 40]

The messages are tests/harness/fuzz.py's mutations of valid SIP (odd header
values, dropped/repeated/renamed lines, flipped and inserted bytes, cuts,
blow-ups, swapped start lines) from a seeded generator, so a run is
repeatable.  The worker (bench/hostile_common.py) runs from ``--repo``
(default: this checkout).  After sending, it waits ``--settle`` s so that
timers (Timer B/C/H …) fire, then counts "Traceback" in the worker's log."""
from __future__ import annotations

import argparse
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from hostile_common import HOST, Worker, start_broker  # noqa: E402

from tests.harness.fuzz import fuzzed  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose proxy is measured")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=int, default=2000, help="messages per second")
    p.add_argument("--no-broker", action="store_true", help="no Kafka: events wait in the outbox")
    p.add_argument("--settle", type=float, default=40.0)
    args = p.parse_args()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # relayed requests land here, unanswered
    sink.bind((HOST, 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((HOST, 0))
    broker = None if args.no_broker else start_broker(Path(tempfile.mkdtemp(prefix="hostile-broker-")))
    worker = Worker(args.repo, sink.getsockname()[1], broker.bootstrap if broker else None)
    rng = random.Random(args.seed)
    try:
        start = time.monotonic()
        for n in range(args.count):
            client.sendto(fuzzed(rng)[:65000], (HOST, worker.port))
            if n % 50 == 49:
                ahead = (n + 1) / args.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        time.sleep(args.settle)
        tracebacks = worker.tracebacks()
        alive = worker.proc.poll() is None
        print(f"repo {args.repo}")
        print(f"{args.count} fuzzed messages (seed {args.seed}): {tracebacks} tracebacks "
              f"= {tracebacks * 10_000 / args.count:.0f} per 10,000; worker log {worker.log_bytes() / 1024:.0f} KB; "
              f"worker {'alive' if alive else 'DEAD'}")
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()
        sink.close()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
