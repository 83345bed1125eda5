"""Where a worker's memory goes under valid traffic (a diagnostic, not a benchmark).

    python bench/leak_probe.py [--count 10000] [--rounds 3] [--settle 35] [--no-broker]

Runs the same real worker as bench/hostile_rss.py, but through a wrapper that
dumps, on SIGUSR1, what the process holds: RSS and anonymous memory
(/proc/PID/smaps_rollup), pymalloc blocks, live objects by type (the change
since the last dump), the core's transaction/call/dialog tables, the outbox's
rows and file sizes.  Sends ``--count`` valid requests per round (as
hostile_rss.py), waits ``--settle`` s for the timers to end, dumps."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_common  # noqa: E402
from hostile_rss import Client, Sink, valid  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# run inside the worker: `python -c WRAPPER <proxy args>`
WRAPPER = r'''
import collections, gc, os, signal, sys
_prev = {}
def _dump(signum, frame):
    out = open(os.environ["LEAK_PROBE_OUT"], "a")
    roll = {}
    for line in open("/proc/self/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "kB":
            roll[parts[0].rstrip(":")] = int(parts[1]) // 1024
    objs = gc.get_objects()
    counts = collections.Counter(type(o).__qualname__ for o in objs)
    print(f"--- RSS {roll.get('Rss')} MB anon {roll.get('Anonymous')} MB  pymalloc blocks "
          f"{sys.getallocatedblocks()}  gc objects {len(objs)}", file=out)
    grown = sorted(((n - _prev.get(t, 0), t, n) for t, n in counts.items()), reverse=True)[:12]
    print("    grown: " + ", ".join(f"{t} +{d} ({n})" for d, t, n in grown if d > 0), file=out)
    _prev.clear(); _prev.update(counts)
    for o in objs:
        name = type(o).__name__
        if name == "Core":
            print(f"    core: server_txs {len(o.server_txs)} client_txs {len(o.client_txs)} "
                  f"calls {len(o.calls)} waiting {len(o.waiting)} dialogs {len(o.dialogs.dialogs)}", file=out)
        elif name == "Outbox":
            print(f"    outbox: count {o.count()}  files " + " ".join(
                f"{p}={os.path.getsize(o.path + p) if os.path.exists(o.path + p) else 0}" for p in ("", "-wal", "-shm")), file=out)
    drivers = [o for o in objs if type(o).__name__ == "TxDriver"]
    if drivers:
        tables = {id(d.table): d.table for d in drivers}
        print(f"    TxDriver: {len(drivers)} alive, done {sum(d.done for d in drivers)}, "
              f"in a table {sum(d.table.get(d.key) is d for d in drivers)}, tables sizes "
              f"{[len(t) for t in tables.values()]}, machine states "
              f"{collections.Counter(str(getattr(d.machine, 'state', '?')) for d in drivers).most_common(5)}", file=out)
        calls = [o for o in objs if type(o).__name__ == "ProxyCall"]
        if calls:
            c = calls[0]
            print(f"    a ProxyCall: {dict((k, type(getattr(c, k, None)).__name__) for k in (getattr(c, '__slots__', None) or vars(c)))}", file=out)
            refs = gc.get_referrers(c)
            print(f"    its referrers: {[type(r).__name__ for r in refs][:10]}", file=out)
            for r in refs:
                if type(r).__name__ == "cell":
                    print(f"    the cell is held by: {[getattr(f, '__qualname__', type(f).__name__) for f in gc.get_referrers(r)][:5]}", file=out)
            del refs, r, c, calls
        del tables
    del objs, drivers
    if os.environ.get("LEAK_PROBE_COLLECT"):
        print(f"    gc.collect() freed {gc.collect()}", file=out)
    out.close()
signal.signal(signal.SIGUSR1, _dump)
sys.argv = ["proxy"] + sys.argv[1:]
from proxy.__main__ import main
sys.exit(main())
'''


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", type=Path, default=REPO)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=int, default=1500)
    p.add_argument("--settle", type=float, default=35.0)
    p.add_argument("--no-broker", action="store_true")
    p.add_argument("--options-only", action="store_true", help="only OPTIONS (no INVITE)")
    p.add_argument("--invite-only", action="store_true", help="only INVITEs")
    args = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="leak-probe-")) / "dump.txt"
    os.environ["LEAK_PROBE_OUT"] = str(out)
    real_popen = hostile_common.subprocess.Popen

    def popen(cmd, **kw):       # the worker through the wrapper
        if cmd[1:3] == ["-m", "proxy"]:
            cmd = [cmd[0], "-c", WRAPPER] + cmd[3:]
        return real_popen(cmd, **kw)
    hostile_common.subprocess.Popen = popen
    sink, client = Sink(), Client()
    sink.start()
    client.start()
    broker = None if args.no_broker else hostile_common.start_broker(Path(tempfile.mkdtemp(prefix="leak-broker-")))
    worker = hostile_common.Worker(args.repo, sink.port, broker.bootstrap if broker else None)
    client.worker_port = worker.port
    make = valid
    if args.options_only:
        make = lambda n, port: valid(2 * n, port)          # noqa: E731  even n: OPTIONS
    elif args.invite_only:
        make = lambda n, port: valid(2 * n + 1, port)      # noqa: E731
    try:
        time.sleep(1.0)
        worker.proc.send_signal(signal.SIGUSR1)
        for r in range(args.rounds):
            offset = 10_000_000 * (r + 1)
            client.send(worker, lambda n, port, offset=offset: make(n + offset, port), args.count, args.rate)
            time.sleep(args.settle)
            worker.proc.send_signal(signal.SIGUSR1)
            time.sleep(3)
            print(f"round {r + 1}: RSS {worker.rss_mb():.1f} MB answers {dict(client.answers)}", flush=True)
            client.answers.clear()
        print(out.read_text())
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()
        sink.stopping = client.stopping = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
