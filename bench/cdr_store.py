"""CDR store benchmark: insert rows/s and API query latency on chdb (or a
ClickHouse server), and — with ``--pipeline`` — the whole CDR path into
ClickHouse: events → CDR processor → cdr.records → sink → queryable.

    .venv/bin/python bench/cdr_store.py [--rows 1000000] [--batch 5000] [--server] [--keep]
    .venv/bin/python bench/cdr_store.py --reuse /tmp/cdr-store-bench-XXXX [--server]
    .venv/bin/python bench/cdr_store.py --sink --calls 100000 --rate 20000
    .venv/bin/python bench/cdr_store.py --pipeline --calls 20000 --rate 2000

Store mode fills a fresh store with synthetic calls (1-3 legs each) through
``CdrStore.insert_legs`` in sink-sized batches (rows/s, duplicates included
once more at the end), then times the queries the REST API runs (p50/p99 ms).
``--server`` runs the same against a clickhouse-server 18.16 started on a free
loopback port (tests/harness/clickhouse.py).  Before the queries it runs the
API process's roll-up (cdr/store/rollup.py: every day of the bench's month is
closed) and checks that statistics from the counted days equal those from
every call; ``--no-rollup`` measures without counts, ``--keep`` leaves the
store and ``--reuse DIR`` runs the queries on it again (no inserts; migrations
a newer program brings are applied and timed).

Sink mode produces CdrLeg rows straight into ``cdr.records`` at ``--rate``
calls/s and measures the sink + ClickHouse half alone, in the embedded-topology
process: sustained rows/s and produce-ack → queryable latency.

Pipeline mode builds on bench/cdr_pipeline.py (its load generator and worker
runner): broker, ``python -m cdr`` and the embedded-topology process
``python -m api.serve`` (sink + API, chdb), then measures for every call the
time from its last event being acknowledged by the broker to the CDR being
queryable in ClickHouse (the sink stamps each row's ``version`` with the
wall-clock ms of its insert; the insert's own duration, at most
``max_insert_ms``, comes on top), and the sustained calls/s and rows/s into
ClickHouse.  Prints figures and one ``RESULT {...}`` JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cdr.store.queries import CdrFilter, CdrStore  # noqa: E402
from cdr.store.rollup import roll_up  # noqa: E402
from proxy.contract.cdr import CdrLeg, cdr_id_for  # noqa: E402
from proxy.infra.clickhouse.migrate import migrate  # noqa: E402

DAY = 86_400_000


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- store mode ---------------------------------------------------------------------

def _media(rng: random.Random, duration_ms: int, end_ms: int) -> dict:
    """Media columns of a relayed answered leg: 50 packets/s of G.711 each way,
    RTCP figures from one phone in three."""
    packets = duration_ms // 20
    rtcp = rng.random() < 1 / 3
    return dict(caller_rtp_packets=packets, caller_rtp_bytes=packets * 172, callee_rtp_packets=packets,
                callee_rtp_bytes=packets * 172, caller_rtp_lost=rng.randrange(20) if rtcp else None,
                caller_rtp_jitter_ms=rng.randrange(1, 30) if rtcp else None,
                caller_rtp_mos_x10=rng.randrange(30, 45) if rtcp else None,
                media_relay=f"udp:10.0.0.{rng.randrange(1, 3)}:2223", last_media_ms=end_ms - rng.randrange(40))


def synthetic_legs(rows: int, t0: int, days: int = 30, seed: int = 1):
    """About ``rows`` legs of calls spread over ``days``: 1000 accounts, 20
    gateways, a carrier-like outcome mix; 10% of calls have 2-3 legs.
    Returns (legs, calls)."""
    made = [leg for batch in synthetic_batches(rows, t0, rows, days, seed) for leg in batch]
    return made, len({leg.cdr_id for leg in made})


def synthetic_batches(rows: int, t0: int, batch: int, days: int = 30, seed: int = 1):
    """``synthetic_legs`` in batches of about ``batch`` legs (a call's legs stay
    in one batch), generated as they are taken: 10M legs need no 13 GB."""
    rng = random.Random(seed)
    outcomes = [("answered", 200, 55), ("busy", 486, 12), ("no_answer", 480, 8),
                ("cancelled", 487, 10), ("failed", 503, 12), ("rejected_credit", 402, 3)]
    kinds, codes, weights = zip(*[(d, c, w) for d, c, w in outcomes])
    span = days * DAY
    made: list = []
    total, i = 0, 0
    while total < rows:
        setup = t0 + int(i * span / max(rows, 1))
        call_id = f"bench-{i}@store"
        cid = cdr_id_for(call_id, "t")
        n = 1 if rng.random() < 0.9 else rng.choice((2, 3))
        k = rng.choices(range(len(kinds)), weights)[0]
        account = f"user{rng.randrange(1000)}@bench.test"
        number = f"+{rng.choice(('49', '33', '44', '1', '39'))}{rng.randrange(10**8):08d}"
        for leg in range(n):
            last = leg == n - 1
            d = kinds[k] if last else "failed"
            answered = d == "answered"
            ringing = 200 + rng.randrange(3000) if d in ("answered", "no_answer", "cancelled") else 0
            duration = rng.randrange(1000, 600_000) if answered else 0
            made.append(CdrLeg(
                cdr_id=cid, leg=leg, legs=n, parent_leg=leg - 1,
                leg_cause="initial" if leg == 0 else "failover", call_id=call_id, from_tag="t",
                account=account, caller_uri=f"sip:{account}", caller_ip=f"10.0.{i % 250}.{i % 200}",
                dialled=f"sip:{number}@bench.test", callee_uri=f"sip:{number}@bench.test",
                gateway=f"gw{rng.randrange(20)}", setup_ms=setup + leg * 500,
                ringing_ms=setup + ringing if ringing else 0,
                answer_ms=setup + ringing + 2000 if answered else 0,
                end_ms=setup + ringing + 2000 + duration, duration_ms=duration,
                billable_s=(duration + 999) // 1000, pdd_ms=ringing or rng.randrange(50, 500),
                sip_code=codes[k] if last else 503, disposition=d,
                call_sip_code=codes[k], call_disposition=kinds[k], proxy="bench",
                **(_media(rng, duration, setup + ringing + 2000 + duration) if answered else {})))
        total += n
        i += 1
        if len(made) >= batch:
            yield made
            made = []
    if made:
        yield made


def process_cpu(server) -> dict[str, float]:
    """CPU seconds so far of this process and (--server) the server's."""
    out = {"bench": time.process_time()}
    if server is not None and server.pid:
        with open(f"/proc/{server.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        out["server"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def open_store(server: bool, work: Path):
    if server:
        from tests.harness.clickhouse import ClickHouseServer
        srv = ClickHouseServer(work / "server").start()
        return srv.backend("bench"), srv
    from proxy.infra.clickhouse.backend import ChdbBackend
    return ChdbBackend(work / "chdb"), None


def run_store(args) -> dict:
    work = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="cdr-store-bench-"))
    backend, server = open_store(args.server, work)
    try:
        m0 = time.perf_counter()
        migrated = migrate(backend)            # --reuse: a store of an older schema is brought up to date
        migrate_s = time.perf_counter() - m0
        store = CdrStore(backend)
        t0 = 1_790_000_000_000                 # 2026-09-21
        mid = t0 + 15 * DAY
        per_batch, rows, calls, account = [], 0, set(), ""
        cpu = {k: 0.0 for k in process_cpu(server)}      # CPU seconds spent in inserts
        if not args.reuse:
            # generated batch by batch (not timed): only the inserts are
            for batch in synthetic_batches(args.rows, t0, args.batch):
                c0 = process_cpu(server)
                b0 = time.perf_counter()
                store.insert_legs(batch)
                per_batch.append((time.perf_counter() - b0) * 1000)
                cpu = {k: cpu[k] + v - c0[k] for k, v in process_cpu(server).items()}
                rows += len(batch)
                calls.update(leg.cdr_id for leg in batch)
                if not account and rows >= args.rows // 2:
                    account = batch[-1].account
        else:
            rows = backend.query("SELECT count() FROM cdr")[0][0]
            calls = {n for n in range(backend.query("SELECT count() FROM cdr_call FINAL")[0][0])}
            account = backend.query("SELECT any(account) FROM cdr_call WHERE setup_ms >= {a} AND setup_ms < {b}",
                                    {"a": mid, "b": mid + DAY})[0][0]
        insert_s = sum(per_batch) / 1000
        # duplicates: a tenth of the rows again (at-least-once redelivery)
        again = 0
        for batch in synthetic_batches(args.rows, t0, args.batch):
            if args.reuse or again >= args.rows // 10:
                break
            store.insert_legs(batch)
            again += len(batch)
        # the API process' roll-up of closed days (every day of the bench's month is)
        r0 = time.perf_counter()
        counted_days = [] if args.no_rollup else roll_up(backend)
        rollup_s = time.perf_counter() - r0
        first_page, cursor = store.list_calls(CdrFilter(), limit=100)
        queries = {
            "list newest 100": lambda: store.list_calls(CdrFilter(), limit=100),
            "list page 2 (cursor)": lambda: store.list_calls(CdrFilter(), limit=100, cursor=cursor),
            "list account, 1 day": lambda: store.list_calls(
                CdrFilter(account=account, from_ms=mid, to_ms=mid + DAY), limit=100),
            "list callee prefix +4930, 1 day": lambda: store.list_calls(
                CdrFilter(callee="4930", from_ms=mid, to_ms=mid + DAY), limit=100),
            "list answered >= 5 min, 1 day": lambda: store.list_calls(
                CdrFilter(dispositions=("answered",), min_duration_ms=300_000, from_ms=mid,
                          to_ms=mid + DAY), limit=100),
            "get one call": lambda: store.get_call(first_page[0]["cdr_id"]),
            "stats per day, 30 days": lambda: store.stats(CdrFilter(), period="day"),
            "stats per hour by gateway, 1 day": lambda: store.stats(
                CdrFilter(from_ms=mid, to_ms=mid + DAY), period="hour", group_by="gateway"),
            "stats per month by prefix(2)": lambda: store.stats(
                CdrFilter(), period="month", group_by="prefix", prefix_len=2),
        }
        latencies = {}
        for name, fn in queries.items():
            fn()                                 # warm
            samples = []
            for _ in range(args.repeat):
                q0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - q0) * 1000)
            latencies[name] = {"p50_ms": round(pct(samples, 0.5), 1), "p99_ms": round(pct(samples, 0.99), 1)}
        stored_calls = store.stats(CdrFilter(), period="month")
        # the counted days answer as every call does (the stats queries above)
        raw = CdrStore(backend, use_counts=False)
        same = all(raw.stats(f, **kw) == store.stats(f, **kw) for f, kw in (
            (CdrFilter(), dict(period="day")), (CdrFilter(), dict(period="month", group_by="prefix", prefix_len=2)),
            (CdrFilter(from_ms=mid + 7_200_000, to_ms=mid + 3 * DAY), dict(period="day"))))
        result = {
            "backend": backend.kind, "rows": rows, "calls": len(calls), "batch": args.batch,
            "insert_rows_per_s": round(rows / insert_s) if insert_s else None,
            "insert_cpu_us_per_leg": {k: round(v / rows * 1e6, 2) for k, v in cpu.items()} if insert_s else None,
            "migrations": migrated, "migrate_s": round(migrate_s, 2),
            "rollup_s": round(rollup_s, 2), "days_counted": len(counted_days),
            "counted_answers_equal_raw": same,
            "insert_batch_p50_ms": round(pct(per_batch, 0.5), 1),
            "insert_batch_p99_ms": round(pct(per_batch, 0.99), 1),
            "calls_counted_after_duplicates": sum(r["attempts"] for r in stored_calls),
            "queries": latencies,
        }
        return result
    finally:
        backend.close()
        if server is not None:
            server.stop()
        if args.keep or args.reuse:
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


# -- pipeline mode -----------------------------------------------------------------------

def run_pipeline(args) -> dict:
    from api.broker import EmbeddedBroker, free_port
    from bench.cdr_pipeline import CallLoad, Profiler, Worker, collect_rows, process_cpu_seconds, write_config
    from proxy.infra.kafka import ensure_topics_sync
    from tests.harness.broker import create_standard_topics, settings_for

    work = Path(tempfile.mkdtemp(prefix="cdr-pipeline-ch-"))
    profiler = ch_server = None
    data = work / "data"
    broker = EmbeddedBroker(log_path=work / "tansu.log").start()
    workers, serve = [], None
    try:
        create_standard_topics(broker)
        ensure_topics_sync(settings_for(broker), {"cdr.records": 6})
        config = write_config(work / "sipledger.toml", batch_size=args.batch_size,
                              batch_window_ms=args.batch_window_ms, silence_seconds=3600,
                              app_id=f"bench-cdr-{os.getpid()}")
        # the processor's [cdr] section only; api.serve gets its own file
        serve_config = work / "serve.toml"
        server_section = ""
        if args.server:     # the API process on a clickhouse-server 18.16 instead of chdb
            from tests.harness.clickhouse import ClickHouseServer
            ch_server = ClickHouseServer(work / "server").start()
            server_section = (f"backend = \"server\"\nport = {ch_server.port}\ndatabase = \"bench\"\n"
                              f"user = \"{ch_server.user}\"\npassword = \"{ch_server.password}\"\n")
        serve_config.write_text(f"[clickhouse]\n{server_section}batch_rows = {args.sink_rows}\n"
                                f"batch_ms = {args.sink_ms}\nconsumer_group = \"bench-sink\"\n"
                                + ("[archive]\nenabled = false\n" if args.no_archive else
                                   f"[archive]\nbatch_rows = {args.archive_rows}\nbatch_ms = {args.archive_ms}\n"
                                   if args.archive_rows else ""))
        port = free_port()

        def start_serve() -> subprocess.Popen:
            process = subprocess.Popen(
                [sys.executable, "-m", "api.serve", "--data-dir", str(data), "--config", str(serve_config),
                 "--bootstrap", broker.bootstrap, "--api-port", str(port)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            line = process.stdout.readline().strip()
            if not line.startswith("API READY"):
                raise RuntimeError(f"api.serve did not start: {line} {process.stderr.read()[-2000:]}")
            return process

        if not args.catchup:
            serve = start_serve()
        workers = [Worker(broker.bootstrap, work, config, i).start() for i in range(args.workers)]
        for w in workers:
            w.wait_ready(60)
        time.sleep(4)       # the sink's group join (Tansu holds it ~3 s)

        arrivals: dict = {}
        server_cpu0 = 0.0

        async def load():
            # the rows' arrival on cdr.records too: splits the latency into
            # processor (event -> row) and sink (row -> queryable)
            calls_load = await CallLoad(broker.bootstrap, args.calls, args.rate, talk_ms=args.talk_ms,
                                        time_scale=args.time_scale).prepare()
            collector = asyncio.create_task(collect_rows(broker.bootstrap, "cdr.records", args.calls,
                                                         timeout=args.timeout, arrivals=arrivals))
            t_start = time.time()
            cpu0.update({p: process_cpu_seconds(p) for p in pids})
            nonlocal server_cpu0
            server_cpu0 = process_cpu_seconds(ch_server.pid) if ch_server is not None else 0.0
            if serve is not None:
                threads0.update(thread_cpu(serve.pid))
            calls = await calls_load.send()
            t_produced = time.time()
            await collector
            return calls, t_start, t_produced, calls_load.starts_s, calls_load.events

        pids = [w.process.pid for w in workers] + ([serve.pid] if serve is not None else [])
        cpu0: dict[int, float] = {}
        threads0: dict[str, float] = {}
        if args.profile and serve is not None:    # the API process (sinks, archive) while the calls run
            profiler = Profiler(serve.pid, Path(args.profile))
        calls, t_start, t_produced, starts_s, events = asyncio.run(load())
        if serve is None:
            # --catchup: the API process starts on full topics (every row on
            # cdr.records, every event on sip.events) and reads them at its pace
            serve = start_serve()
            pids.append(serve.pid)
            cpu0[serve.pid] = process_cpu_seconds(serve.pid)
            threads0.update(thread_cpu(serve.pid))
            if args.profile:
                profiler = Profiler(serve.pid, Path(args.profile))
        token = _admin_token(data)
        # the API process's CPU for this work: until the archiver has committed
        # every event and the process is idle (the API queries below, which
        # poll for completion, are not the sinks' work)
        cpu_done = _sinks_settled(serve.pid, data, 0 if args.no_archive else events, args.timeout)
        threads = {name: round((cpu - threads0.get(name, 0.0)) * 1e6 / args.calls, 1)
                   for name, cpu in thread_cpu(serve.pid).items()}
        threads = {name: us for name, us in sorted(threads.items(), key=lambda kv: -kv[1]) if us >= 0.5}
        # wait until every call is queryable through the API
        import httpx
        deadline = time.monotonic() + args.timeout
        counted, seen = 0, []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                          headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            while time.monotonic() < deadline:
                q0 = time.perf_counter()
                rows = client.get("/v1/stats", params={"period": "month"}).json()["rows"]
                seen.append((time.perf_counter() - q0) * 1000)
                counted = sum(r["attempts"] for r in rows)
                if counted >= args.calls:
                    break
                time.sleep(0.25)
            api_latency = []
            for _ in range(20):
                q0 = time.perf_counter()
                client.get("/v1/cdrs", params={"limit": 100})
                api_latency.append((time.perf_counter() - q0) * 1000)
        t_all_in = time.time()
        cpu = {p: process_cpu_seconds(p) - c for p, c in cpu0.items()}
        api_cpu_with_queries = cpu[serve.pid]
        cpu[serve.pid] = cpu_done - cpu0[serve.pid]
        if profiler is not None:
            profiler.stop()
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
        sink_stats = next((json.loads(l.split(" ", 2)[2]) for l in err.splitlines()
                           if l.startswith("SINK STATS ")), {})
        serve = None
        # first insert time of every leg -> when each call became queryable
        from proxy.infra.clickhouse.backend import ChdbBackend
        backend = ch_server.backend("bench") if ch_server is not None else ChdbBackend(data / "clickhouse")
        try:
            first = dict(backend.query(
                "SELECT cdr_id, max(first_version) FROM (SELECT cdr_id, leg, min(version) AS first_version "
                "FROM cdr GROUP BY cdr_id, leg) GROUP BY cdr_id"))
            rows_stored = backend.query("SELECT count() FROM cdr FINAL")[0][0]
        finally:
            backend.close()
        latencies, queryable, to_topic, topic_to_store = [], [], [], []
        for call in calls:
            cid = cdr_id_for(call.call_id, "ft" + call.call_id[-8:])
            if cid in first and call.end_wall_ms:
                latencies.append(first[cid] - call.end_wall_ms)
                queryable.append(first[cid])
                if cid in arrivals:
                    to_topic.append(arrivals[cid][0] - call.end_wall_ms)
                    topic_to_store.append(first[cid] - arrivals[cid][0])
        span_s = ((max(queryable) - min(queryable)) / 1000) if len(queryable) > 1 else float("nan")
        result = {
            "calls": args.calls, "offered_rate": args.rate, "workers": args.workers,
            "sink_batch_rows": args.sink_rows, "sink_batch_ms": args.sink_ms,
            "queryable_calls": len(latencies), "rows_stored": rows_stored,
            "produce_s": round(t_produced - t_start, 2),
            "achieved_offered_rate": round(args.calls / max(starts_s, 1e-9), 1),
            "workers_cpu_ms_per_call": round(sum(cpu[w.process.pid] for w in workers) * 1000 / args.calls, 3),
            "sink_process_cpu_ms_per_call": round(cpu[pids[-1]] * 1000 / args.calls, 3),
            "clickhouse_server_cpu_ms_per_call": (
                round((process_cpu_seconds(ch_server.pid) - server_cpu0) * 1000 / args.calls, 3)
                if ch_server is not None else None),
            "sink_process_cpu_ms_per_call_with_api_polls": round(api_cpu_with_queries * 1000 / args.calls, 3),
            "events": events,
            "sink_process_threads_us_per_call": threads,
            "load_average": os.getloadavg()[0],
            "calls_per_s_into_clickhouse": round(len(queryable) / span_s, 1) if queryable else 0,
            "rows_per_s_into_clickhouse": round(rows_stored / span_s, 1) if queryable else 0,
            "drain_after_produce_s": round(max(queryable) / 1000 - t_produced, 2) if queryable else None,
            "last_event_to_queryable_p50_ms": round(pct(latencies, 0.5), 1),
            "last_event_to_queryable_p99_ms": round(pct(latencies, 0.99), 1),
            "last_event_to_queryable_max_ms": round(max(latencies), 1) if latencies else None,
            "last_event_to_topic_p50_ms": round(pct(to_topic, 0.5), 1),
            "last_event_to_topic_p99_ms": round(pct(to_topic, 0.99), 1),
            "topic_to_queryable_p50_ms": round(pct(topic_to_store, 0.5), 1),
            "topic_to_queryable_p99_ms": round(pct(topic_to_store, 0.99), 1),
            "sink": sink_stats,
            "api_list_p50_ms": round(pct(api_latency, 0.5), 1),
            "api_stats_p50_ms_under_load": round(pct(seen, 0.5), 1),
            "all_in_after_produce_s": round(t_all_in - t_produced, 2),
        }
        return result
    finally:
        if profiler is not None:
            profiler.stop()
        if serve is not None and serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(30)
        for w in workers:
            w.stop()
        if ch_server is not None:
            ch_server.stop()
        broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by name (digits dropped: a pool is one
    entry; "main" is the main thread, the API process's event loop): where the API process's CPU goes (the event loop, insert threads,
    chdb's own pools)."""
    import re
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (task / "stat").read_bytes()
        except OSError:
            continue
        name = raw[raw.index(b"(") + 1:raw.rindex(b")")].decode(errors="replace")
        fields = raw.rsplit(b")", 1)[1].split()
        key = "main" if task.name == str(pid) else re.sub(r"[\d_-]+$", "", name) or name
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _sinks_settled(pid: int, data: Path, events: int, timeout: float, idle_s: float = 1.0) -> float:
    """The API process's CPU seconds once its sinks are done: the archiver has
    committed ``events`` records of sip.events (DATA_DIR/run/archive.json) and
    the process then used < 3% of a core for ``idle_s`` (the CDR sink's last
    insert is behind it).  Returns the CPU at the start of that idle window."""
    from bench.cdr_pipeline import process_cpu_seconds
    from proxy.infra.config import ARCHIVE_RUN_FILE, RUN_DIR

    position = data / RUN_DIR / ARCHIVE_RUN_FILE
    deadline = time.monotonic() + timeout
    samples: list[tuple[float, float]] = []
    while time.monotonic() < deadline:
        now, cpu = time.monotonic(), process_cpu_seconds(pid)
        samples.append((now, cpu))
        try:
            archived = sum(json.loads(position.read_text())["sip"].values())
        except (OSError, ValueError, KeyError):
            archived = 0
        window = [c for t, c in samples if t >= now - idle_s]
        if (archived >= events and samples[0][0] <= now - idle_s
                and cpu - window[0] < 0.03 * idle_s):
            return window[0]
        time.sleep(0.05)
    return process_cpu_seconds(pid)


def run_sink(args) -> dict:
    """CdrLeg rows straight into cdr.records at ``--rate`` calls/s (no processor):
    the sink + ClickHouse half of the pipeline at a given load, in the
    embedded-topology process."""
    from aiokafka import AIOKafkaProducer

    from api.broker import EmbeddedBroker, free_port
    from proxy.infra.kafka import ensure_topics_sync, producer_kwargs
    from tests.harness.broker import settings_for

    work = Path(tempfile.mkdtemp(prefix="cdr-sink-bench-"))
    data = work / "data"
    broker = EmbeddedBroker(log_path=work / "tansu.log").start()
    serve = None
    try:
        settings = settings_for(broker)
        ensure_topics_sync(settings, {"cdr.records": 6})
        config = work / "serve.toml"
        config.write_text(f"[clickhouse]\nbatch_rows = {args.sink_rows}\nbatch_ms = {args.sink_ms}\n")
        port = free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "api.serve", "--data-dir", str(data), "--config", str(config),
             "--bootstrap", broker.bootstrap, "--api-port", str(port)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        if not serve.stdout.readline().startswith("API READY"):
            raise RuntimeError(f"api.serve did not start: {serve.stderr.read()[-2000:]}")
        time.sleep(4)       # the sink's group join (Tansu holds it ~3 s)
        legs, calls = synthetic_legs(int(args.calls * 1.1), int(time.time() * 1000) - DAY)
        by_call: dict[str, list] = {}
        for leg in legs:
            by_call.setdefault(leg.cdr_id, []).append(leg)
        acked: dict[str, int] = {}

        async def load():
            import msgspec
            producer = AIOKafkaProducer(**producer_kwargs(settings, linger_ms=5,
                                                          max_batch_size=256 * 1024))
            await producer.start()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            pending = []
            try:
                for i, (cid, call_legs) in enumerate(by_call.items()):
                    delay = t0 + i / args.rate - loop.time()
                    if delay > 0.002:
                        await asyncio.sleep(delay)
                    for leg in call_legs:
                        fut = await producer.send("cdr.records", msgspec.json.encode(leg), key=cid.encode())
                        pending.append(fut)
                    fut.add_done_callback(lambda _f, cid=cid: acked.__setitem__(cid, int(time.time() * 1000)))
                    if len(pending) > 5000:
                        await asyncio.gather(*pending)
                        pending.clear()
                await asyncio.gather(*pending)
            finally:
                await producer.stop()
            return loop.time() - t0

        t_start = time.time()
        produce_s = asyncio.run(load())
        token = _admin_token(data)
        import httpx
        deadline = time.monotonic() + args.timeout
        with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                          headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            while time.monotonic() < deadline:
                rows = client.get("/v1/stats", params={"period": "month"}).json()["rows"]
                if sum(r["attempts"] for r in rows) >= len(by_call):
                    break
                time.sleep(0.25)
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
        sink_stats = next((json.loads(l.split(" ", 2)[2]) for l in err.splitlines()
                           if l.startswith("SINK STATS ")), {})
        serve = None
        from proxy.infra.clickhouse.backend import ChdbBackend
        backend = ChdbBackend(data / "clickhouse")
        try:
            first = dict(backend.query(
                "SELECT cdr_id, max(first_version) FROM (SELECT cdr_id, leg, min(version) AS first_version "
                "FROM cdr GROUP BY cdr_id, leg) GROUP BY cdr_id"))
            rows_stored = backend.query("SELECT count() FROM cdr FINAL")[0][0]
        finally:
            backend.close()
        latencies = [first[cid] - acked[cid] for cid in by_call if cid in first and cid in acked]
        span_s = (max(first.values()) - min(first.values())) / 1000 if len(first) > 1 else float("nan")
        return {
            "mode": "sink", "calls": len(by_call), "rows": len(legs), "offered_rate": args.rate,
            "achieved_offered_calls_per_s": round(len(by_call) / produce_s, 1),
            "sink_batch_rows": args.sink_rows, "sink_batch_ms": args.sink_ms,
            "queryable_calls": len(first), "rows_stored": rows_stored,
            "rows_per_s_into_clickhouse": round(rows_stored / span_s, 1),
            "calls_per_s_into_clickhouse": round(len(first) / span_s, 1),
            "produce_to_queryable_p50_ms": round(pct(latencies, 0.5), 1),
            "produce_to_queryable_p99_ms": round(pct(latencies, 0.99), 1),
            "produce_to_queryable_max_ms": max(latencies) if latencies else None,
            "sink": sink_stats, "started": t_start,
        }
    finally:
        if serve is not None and serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(30)
        broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _admin_token(data: Path) -> str:
    from api.tokens import open_store
    store = open_store(data)
    try:
        return store.create("admin", name=f"bench-{uuid.uuid4().hex[:6]}")[1]
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", action="store_true", help="the whole path, events to ClickHouse")
    parser.add_argument("--sink", action="store_true",
                        help="CdrLeg rows into cdr.records at --rate calls/s: sink + ClickHouse only")
    parser.add_argument("--rows", type=int, default=1_000_000, help="store mode: legs to insert")
    parser.add_argument("--batch", type=int, default=5000, help="store mode: rows per insert")
    parser.add_argument("--repeat", type=int, default=30, help="store mode: runs per query")
    parser.add_argument("--server", action="store_true",
                        help="a clickhouse-server 18.16 (store mode; pipeline mode: the API process's back end)")
    parser.add_argument("--reuse", metavar="DIR", help="store mode: the store a --keep run left (no inserts)")
    parser.add_argument("--no-rollup", action="store_true", help="store mode: no counted days (every call)")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000, help="processor batch")
    parser.add_argument("--batch-window-ms", type=int, default=20)
    parser.add_argument("--sink-rows", type=int, default=5000)
    parser.add_argument("--sink-ms", type=int, default=200)
    parser.add_argument("--talk-ms", type=int, default=20000)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--archive-rows", type=int, default=0,
                        help="pipeline mode: [archive] batch_rows (0: the default)")
    parser.add_argument("--archive-ms", type=int, default=1000, help="pipeline mode: with --archive-rows")
    parser.add_argument("--catchup", action="store_true",
                        help="pipeline mode: the API process starts once every row and event is on the broker "
                             "(its CPU per call at full batches; the latencies then mean nothing)")
    parser.add_argument("--no-archive", action="store_true",
                        help="pipeline mode: the API process without the archiver (its share of the CPU)")
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="pipeline mode: py-spy (collapsed stacks) of the API process while the calls run")
    args = parser.parse_args(argv)
    if args.pipeline:
        r = run_pipeline(args)
        print(f"{r['queryable_calls']}/{r['calls']} calls queryable; offered {args.rate:g}/s "
              f"(achieved {r['achieved_offered_rate']}/s)")
        print(f"into ClickHouse: {r['calls_per_s_into_clickhouse']} calls/s, "
              f"{r['rows_per_s_into_clickhouse']} rows/s sustained; drained "
              f"{r['drain_after_produce_s']} s after the last event")
        print(f"last event -> queryable: p50 {r['last_event_to_queryable_p50_ms']} ms, "
              f"p99 {r['last_event_to_queryable_p99_ms']} ms, max {r['last_event_to_queryable_max_ms']} ms "
              f"(+ insert time, max {round(r['sink'].get('max_insert_s', 0) * 1000, 1)} ms)")
        print(f"  of which processor (event -> cdr.records): p50 {r['last_event_to_topic_p50_ms']} ms, "
              f"p99 {r['last_event_to_topic_p99_ms']} ms; sink (cdr.records -> queryable): "
              f"p50 {r['topic_to_queryable_p50_ms']} ms, p99 {r['topic_to_queryable_p99_ms']} ms")
        print(f"CPU per call: workers {r['workers_cpu_ms_per_call']} ms, API process "
              f"{r['sink_process_cpu_ms_per_call']} ms ({r['sink_process_cpu_ms_per_call_with_api_polls']} ms "
              f"with the bench's API queries); ClickHouse server {r['clickhouse_server_cpu_ms_per_call']} ms; "
              f"load {r['load_average']:.1f}")
        print(f"  API process threads, us per call: {r['sink_process_threads_us_per_call']}")
        print("RESULT " + json.dumps(r))
        return 0 if r["queryable_calls"] == r["calls"] else 1
    if args.sink:
        r = run_sink(args)
        print(f"{r['queryable_calls']}/{r['calls']} calls ({r['rows']} rows) queryable; offered "
              f"{args.rate:g} calls/s (achieved {r['achieved_offered_calls_per_s']}/s)")
        print(f"into ClickHouse: {r['calls_per_s_into_clickhouse']} calls/s, "
              f"{r['rows_per_s_into_clickhouse']} rows/s; produce ack -> queryable: "
              f"p50 {r['produce_to_queryable_p50_ms']} ms, p99 {r['produce_to_queryable_p99_ms']} ms "
              f"(+ insert time, max {round(r['sink'].get('max_insert_s', 0) * 1000, 1)} ms)")
        print("RESULT " + json.dumps(r))
        return 0 if r["queryable_calls"] == r["calls"] else 1
    r = run_store(args)
    print(f"{r['backend']}: inserted {r['rows']} legs ({r['calls']} calls) in batches of {r['batch']}: "
          f"{r['insert_rows_per_s']} rows/s (batch p50 {r['insert_batch_p50_ms']} ms, "
          f"p99 {r['insert_batch_p99_ms']} ms); CPU per leg {r['insert_cpu_us_per_leg']} us")
    print(f"migrations {r['migrations']} in {r['migrate_s']} s; roll-up: {r['days_counted']} days counted in {r['rollup_s']} s; counted days answer as every "
          f"call: {r['counted_answers_equal_raw']}")
    for name, q in r["queries"].items():
        print(f"  {name:<36} p50 {q['p50_ms']:>8} ms   p99 {q['p99_ms']:>8} ms")
    print("RESULT " + json.dumps(r))
    return 0 if r["calls_counted_after_duplicates"] == r["calls"] and r["counted_answers_equal_raw"] else 1


if __name__ == "__main__":
    sys.exit(main())
