"""Archive ingest rate, bytes per call on disk, rebuild rate (docs/operations.md).

    PYTHONPATH=. python bench/archive.py [--calls 50000] [--dir /tmp/archive-bench]

Synthetic calls (bench/cdr_pipeline.py's mix of shapes) → their sip.events as
the proxy encodes them → the archiver's decode and insert (``archived`` +
``ArchiveStore.insert``, chdb, batches of 5000 like the sink) → ``OPTIMIZE
FINAL`` → bytes on disk from system.parts → ``rebuild_cdrs`` of the whole
range into an empty cdr table (every call "added")."""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.cdr_pipeline import MIX, call_events
from cdr.archive.rebuild import RebuildLimits, rebuild_cdrs
from cdr.archive.sink import archived
from cdr.archive.store import ArchiveStore
from cdr.store.queries import CdrStore
from proxy.contract import events as ev
from proxy.infra.clickhouse.backend import ChdbBackend
from proxy.infra.clickhouse.migrate import migrate

T0 = 1_767_225_600_000
BATCH = 5000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="archive-bench-"))
    shutil.rmtree(root / "chdb", ignore_errors=True)
    backend = ChdbBackend(root / "chdb")
    migrate(backend)
    store = ArchiveStore(backend)
    shapes = [shape for shape, weight in MIX.items() for _ in range(weight)]
    spacing = max(1, 86_400_000 // args.calls)          # the calls of one day
    # generated in chunks (1M calls do not fit in memory as objects); only the
    # archiver's part (decode + insert) is timed
    ingest_s, events, json_bytes = 0.0, 0, 0
    for first in range(0, args.calls, BATCH):
        payloads = [ev.encode(e) for i in range(first, min(args.calls, first + BATCH))
                    for e in call_events(shapes[i % len(shapes)], f"b{i:08d}@bench", T0 + i * spacing)]
        events += len(payloads)
        json_bytes += sum(map(len, payloads))
        started = time.perf_counter()
        for i in range(0, len(payloads), BATCH):
            store.insert([archived("sip", p) for p in payloads[i:i + BATCH]])
        ingest_s += time.perf_counter() - started
    backend.execute("OPTIMIZE TABLE events FINAL")
    disk, rows = store.bytes_on_disk()
    started = time.perf_counter()
    report = rebuild_cdrs(CdrStore(backend), RebuildLimits(), T0, T0 + 86_400_000, now_ms=T0 + 400 * 3_600_000)
    rebuild_s = time.perf_counter() - started
    per_call = disk / args.calls
    print(f"calls {args.calls}, events {events} ({events / args.calls:.2f}/call, "
          f"{json_bytes / events:.0f} B JSON each)")
    print(f"ingest: {events / ingest_s:,.0f} events/s (decode + insert, batches of {BATCH})")
    print(f"disk: {disk:,} B for {rows:,} rows = {per_call:.0f} B/call; "
          f"1M calls/day for 30 days = {per_call * 30e6 / 1e9:.1f} GB")
    print(f"rebuild: {report.calls} calls ({report.added} added, {report.legs_written} legs) in {rebuild_s:.1f} s "
          f"= {report.calls / rebuild_s:,.0f} calls/s")
    backend.close()


if __name__ == "__main__":
    main()
