"""RADIUS accounting throughput: requests/s to a private FreeRADIUS (detail module on).

    .venv/bin/python bench/radius_rate.py [--records 20000] [--in-flight 8,32,64] [--calls 10000]
                                          [--workers 1] [--skip sync,queue,pipeline] [--profile FILE]
                                          [--transport udp|tcp]

Three measurements, each against its own FreeRADIUS on loopback
(tests/harness/freeradius.py, 4 threads, every request written to its detail file):

1. ``sync``: pyrad's blocking client, one request at a time (the baseline);
2. ``queue``: the durable queue alone (radius/queue.py): ``--records`` Start/Stop
   records enqueued in the SQLite spool, then drained by the sender with N in
   flight (a new packet per send, acks committed), with the sender's CPU per record;
3. ``pipeline``: the whole worker (``python -m radius``): ``--calls`` answered
   calls' events pre-produced to ``sip.events`` on an embedded Tansu broker,
   then the worker started; measured from the moment the group assigned it
   partitions (its claim in the spool; joining takes ~3 s on Tansu and is
   reported apart) until the spool has every record acknowledged (2 per call).  ``--workers N``: N workers in one
   consumer group sharing the spool (scale-out; the others join the first
   while it drains).  CPU per call of the workers and of FreeRADIUS is
   reported beside the rates (the machine is shared: compare CPU, not rates);
   ``--profile FILE`` writes py-spy's collapsed stacks of the (first) worker.

``--transport tcp``: the queue and the worker send over RADIUS/TCP (RFC 6613;
the same FreeRADIUS listens on both).

Prints the figures and one JSON line (``RESULT {...}``).
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pyrad import packet as rpacket  # noqa: E402
from pyrad.client import Client  # noqa: E402
from pyrad.dictionary import Dictionary  # noqa: E402

from bench.cdr_pipeline import call_events  # noqa: E402
from proxy.contract.callfold import fold  # noqa: E402
from proxy.infra.config import RadiusServer, RadiusSettings  # noqa: E402
from radius import DICTIONARY  # noqa: E402
from radius.queue import Sender, Spool, WireEncoder  # noqa: E402
from radius.records import Context, Progress, plan, with_delay  # noqa: E402
from tests.harness.freeradius import FreeRadius, RadiusWorkerProcess, radius_config  # noqa: E402

T0 = int(time.time() * 1000) - 3_600_000


def _run(coro):
    """On uvloop, as the worker runs."""
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def make_records(n_calls: int, prefix: str) -> list:
    ctx = Context(nas_identifier="bench")
    records = []
    for i in range(n_calls):
        records += plan(fold(call_events("answered_caller_bye", f"{prefix}-{i}@bench", T0 + i,
                                         scale=0.01)), Progress(), ctx)[0]
    return records


def bench_sync(workdir: Path, n: int) -> float:
    fr = FreeRadius(workdir / "fr-sync").start()
    try:
        client = Client(server="127.0.0.1", acctport=fr.port, secret=fr.secret.encode(),
                        dict=Dictionary(str(DICTIONARY)))
        client.timeout, client.retries = 2, 1
        records = make_records(n // 2, "sync")
        started = time.perf_counter()
        for record in records:
            pkt = client.CreateAcctPacket()
            for name, value in with_delay(record.attrs, 0, 0):
                pkt.AddAttribute(name, value)
            reply = client.SendPacket(pkt)
            assert reply.code == rpacket.AccountingResponse
        return len(records) / (time.perf_counter() - started)
    finally:
        fr.stop()


async def _drain(spool: Spool, settings: RadiusSettings, entries: list) -> tuple[float, dict]:
    sender = Sender(spool, settings, Dictionary(str(DICTIONARY)))
    await sender.start()
    started = time.perf_counter()
    cpu0 = time.process_time()
    sender.add(entries)
    task = asyncio.create_task(sender.run())
    while not sender.drained:
        await asyncio.sleep(0.005)
    sender.flush_acks()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    await sender.close()
    task.cancel()
    await asyncio.wait([task])
    assert spool.pending_count() == 0
    # this process runs the sender alone (FreeRADIUS is another process): its CPU per record
    return len(entries) / elapsed, dict(sender.counts, sender_cpu_us_per_record=round(cpu * 1e6 / len(entries), 1))


def bench_queue(workdir: Path, n: int, in_flight: int, transport: str = "udp") -> tuple[float, float, dict]:
    """(requests/s draining the queue, records/s enqueueing, sender counters)."""
    fr = FreeRadius(workdir / f"fr-queue-{in_flight}").start()
    try:
        settings = RadiusSettings(servers=(RadiusServer(host="127.0.0.1", port=fr.port,
                                                        secret=fr.secret),),
                                  max_in_flight=in_flight, timeout=2.0, retries=2, transport=transport)
        records = make_records(n // 2, f"q{in_flight}")
        # stored in wire form, as the worker stores them
        spool = Spool(workdir / f"spool-{in_flight}", encode=WireEncoder(Dictionary(str(DICTIONARY))).encode)
        started = time.perf_counter()
        entries = []
        for i in range(0, len(records), 1000):           # the worker's batch size
            entries += spool.commit(records[i:i + 1000])
        enqueue_rate = len(records) / (time.perf_counter() - started)
        assert fr.proc is not None
        fr_cpu0 = cpu_s(fr.proc.pid)
        rate, counts = _run(_drain(spool, settings, entries))
        counts["freeradius_cpu_us_per_record"] = round((cpu_s(fr.proc.pid) - fr_cpu0) * 1e6 / len(entries), 1)
        spool.close()
        counts["logged"] = len(fr.records())
        return rate, enqueue_rate, counts
    finally:
        fr.stop()


def cpu_s(pid: int) -> float:
    """utime + stime of a process (and its reaped children), seconds: the
    machine is shared, so CPU per call is the figure that compares runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def bench_pipeline(workdir: Path, n_calls: int, in_flight: int, profile: str = "", workers: int = 1,
                   transport: str = "udp") -> dict:
    from api.broker import EmbeddedBroker
    from proxy.contract.events import encode
    from proxy.infra.config import KafkaSettings
    from proxy.infra.kafka import ensure_topics_sync
    from tests.harness.broker import produce

    broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
    fr = FreeRadius(workdir / "fr-pipeline").start()
    procs: list[RadiusWorkerProcess] = []
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        topic = "sip.events"
        ensure_topics_sync(kafka, {topic: 6})
        events = []
        for i in range(n_calls):
            events += call_events("answered_caller_bye", f"p-{i}@bench", T0 + i, scale=0.01)
        t = time.perf_counter()
        asyncio.run(produce(kafka, topic, [(e.call_id.encode(), encode(e)) for e in events]))
        produce_s = time.perf_counter() - t
        config = workdir / "radius.toml"
        config.write_text(radius_config([fr], topic=topic, max_in_flight=in_flight, transport=transport,
                                        group_id=f"bench-{uuid.uuid4().hex[:6]}"))
        # several workers: one consumer group, one spool directory (radius/README.md, scale-out),
        # started together so that they join the group in one generation (Tansu holds a join
        # for 3 s); the CPU they spent starting up is not counted
        for _ in range(workers):
            procs.append(RadiusWorkerProcess(workdir / "data", config, broker.bootstrap, loglevel="warning"))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda p: p.start(timeout=60), procs))
        worker = procs[0]
        assert all(p.proc is not None for p in procs) and worker.proc is not None and fr.proc is not None
        cpu0 = {"worker": sum(cpu_s(p.proc.pid) for p in procs if p.proc is not None),
                "freeradius": cpu_s(fr.proc.pid)}
        spy = None
        if profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", profile,
                                    "-f", "raw", "-r", "200", "-p", str(worker.proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        db_path = workdir / "data" / "radius" / "radius.sqlite"

        def count(sql: str) -> int:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
            try:
                return db.execute(sql).fetchone()[0]
            finally:
                db.close()

        # the clock starts once the group gave the worker(s) partitions (their claim in
        # the spool), not at READY: joining a group takes ~3 s on Tansu, which is not
        # the worker's speed
        joined = time.perf_counter()
        while count("SELECT count(*) FROM owners") == 0 and time.perf_counter() - joined < 60:
            time.sleep(0.01)
        join_s = time.perf_counter() - joined
        started = time.perf_counter()
        expected = 2 * n_calls
        sent = 0
        while time.perf_counter() - started < 300:
            sent = count("SELECT count(*) FROM sent")
            if sent >= expected:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        owners = count("SELECT count(DISTINCT owner) FROM owners")
        cpu = {"worker": sum(cpu_s(p.proc.pid) for p in procs if p.proc is not None) - cpu0["worker"],
               "freeradius": cpu_s(fr.proc.pid) - cpu0["freeradius"]}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        return {"workers": workers, "owners_at_end": owners, "calls": n_calls, "events": len(events), "records": sent, "seconds": round(elapsed, 2),
                "events_per_s": round(len(events) / elapsed), "requests_per_s": round(sent / elapsed),
                "produce_s": round(produce_s, 2), "join_s": round(join_s, 2), "logged": len(fr.records()),
                "worker_cpu_ms_per_call": round(cpu["worker"] * 1000 / n_calls, 3),
                "freeradius_cpu_ms_per_call": round(cpu["freeradius"] * 1000 / n_calls, 3),
                "load1": os.getloadavg()[0]}
    finally:
        for proc in procs:
            proc.stop()
        fr.stop()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--sync-records", type=int, default=6000)
    parser.add_argument("--in-flight", default="8,32,64")
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--pipeline-in-flight", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="pipeline: workers in one consumer group")
    parser.add_argument("--profile", default="", help="py-spy collapsed stacks (-f raw) of the pipeline's worker")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp",
                        help="queue and pipeline: RADIUS over UDP or TCP (RFC 6613)")
    parser.add_argument("--skip", default="", help="comma list of sync,queue,pipeline to skip")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (detail files, spools)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(tempfile.mkdtemp(prefix="radius-bench-"))
    try:
        return run(args, skip, workdir)
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, skip: set, workdir: Path) -> int:
    result: dict = {"transport": args.transport}
    if "sync" not in skip:
        rate = bench_sync(workdir, args.sync_records)
        result["sync_req_per_s"] = round(rate)
        print(f"sync pyrad client, 1 in flight:          {rate:8.0f} req/s", flush=True)
    if "queue" not in skip:
        result["queue"] = {}
        for n in (int(x) for x in args.in_flight.split(",")):
            rate, enqueue_rate, counts = bench_queue(workdir, args.records, n, args.transport)
            result["queue"][n] = {"req_per_s": round(rate), "enqueue_per_s": round(enqueue_rate), **counts}
            print(f"durable queue -> FreeRADIUS, {n:3d} in flight: {rate:8.0f} req/s  "
                  f"(enqueue {enqueue_rate:.0f}/s; "
                  f"sender CPU {counts.get('sender_cpu_us_per_record')} us per record, FreeRADIUS "
                  f"{counts.get('freeradius_cpu_us_per_record')} us; "
                  f"sends={counts.get('sends')} acked={counts.get('acked')} "
                  f"timeouts={counts.get('timeouts', 0)} logged={counts.get('logged')})", flush=True)
    if "pipeline" not in skip:
        n = args.pipeline_in_flight
        figures = bench_pipeline(workdir, args.calls, n, args.profile, args.workers, args.transport)
        result["pipeline"] = figures
        print(f"{args.workers} worker(s) sip.events -> FreeRADIUS ({n} in flight each): {figures['requests_per_s']} req/s, "
              f"{figures['events_per_s']} events/s ({figures['calls']} calls, {figures['records']} "
              f"records in {figures['seconds']} s; {figures['logged']} logged); CPU per call: worker "
              f"{figures['worker_cpu_ms_per_call']} ms, FreeRADIUS {figures['freeradius_cpu_ms_per_call']} ms "
              f"(load {figures['load1']:.1f})", flush=True)
    print("RESULT " + json.dumps(result))
    # every record acknowledged and in FreeRADIUS's detail file, or the run failed (a
    # record logged twice is RADIUS's at-least-once after a timeout, not a failure)
    failed = [f"queue {n}" for n, q in result.get("queue", {}).items()
              if not 0 < q.get("acked", 0) <= q.get("logged", 0)]
    pipeline = result.get("pipeline")
    if pipeline and not pipeline["records"] == 2 * pipeline["calls"] <= pipeline["logged"]:
        failed.append("pipeline")
    if failed:
        print(f"FAIL: records not acknowledged or not logged in {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
