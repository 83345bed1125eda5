"""CDR pipeline benchmark, up to ``cdr.records``: synthetic call events into the
broker at a set rate, the CDR processor (``python -m cdr``) turning them into
CdrLeg rows, and the sustained calls/s measured at the records topic.

    .venv/bin/python bench/cdr_pipeline.py --calls 20000 --rate 2000 [--workers 1]

Starts its own Tansu broker on a free loopback port unless ``--bootstrap`` is
given.  Prints the figures and one JSON line (``RESULT {...}``).

Importable pieces (the ClickHouse part of the benchmark builds on them):
* ``CallBuilder`` / ``call_events(shape, ...)`` — one call's events as the
  proxy emits them (shapes: see ``SHAPES``);
* ``produce_calls(bootstrap, n, rate)`` — produce ``n`` calls' events into
  ``sip.events`` at ``rate`` calls/s, each call's events spaced like a real
  call (compressed by ``time_scale``); returns the calls' ids and BYE times.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxy.contract import events as ev  # noqa: E402
from proxy.infra import clock  # noqa: E402

SHAPES = ("answered_caller_bye", "answered_callee_bye", "busy", "cancel", "no_answer",
          "not_found", "forked", "failover", "timeout", "teardown", "credit",
          "media_timeout", "session_expired")
# a mix like a carrier's: mostly answered, the usual failures
MIX = {"answered_caller_bye": 40, "answered_callee_bye": 20, "busy": 10, "cancel": 8,
       "no_answer": 7, "not_found": 4, "forked": 4, "failover": 4, "timeout": 1,
       "teardown": 1, "credit": 1}

_ids = itertools.count(1)


def _event_id() -> str:
    return f"{os.getpid():08x}{next(_ids):024x}"


@dataclass
class CallBuilder:
    """Emits one call's events with the proxy's envelope; ``at(ms)`` moves the clock."""
    call_id: str
    t0: int
    from_tag: str = "ft1"
    proxy: str = "bench-1"
    caller: str = "sip:alice@example.test"
    account: str | None = "alice@example.test"
    dialled: str = "sip:+4930123456@example.test"
    events: list = field(default_factory=list)
    now: int = 0
    to_tag: str | None = None

    def at(self, offset_ms: int) -> "CallBuilder":
        self.now = self.t0 + offset_ms
        return self

    def _emit(self, cls, **fields):
        event = cls(id=_event_id(), ts_ms=self.now, call_id=self.call_id, from_tag=self.from_tag,
                    to_tag=fields.pop("to_tag", self.to_tag), proxy=self.proxy, worker=0, **fields)
        self.events.append(event)
        return event

    def invite(self, *, user_agent: str = "Softphone/1.0"):
        return self._emit(ev.InviteReceived, branch="z9hG4bKc" + self.call_id[-6:], cseq=1,
                          caller=ev.Caller(from_uri=self.caller, account=self.account,
                                           display_name="Alice"),
                          callee=ev.Callee(request_uri=self.dialled, to_uri=self.dialled),
                          source=ev.Source(ip="192.0.2.10", port=5060, transport="udp"),
                          user_agent=user_agent, max_duration_s=None)

    def route(self, index: int, *, parent: int | None = None, cause: str = "initial",
              host: str = "198.51.100.7"):
        target = f"sip:+4930123456@{host}:5060"
        return self._emit(ev.InviteRouted,
                          leg=ev.Leg(index=index, branch=f"z9hG4bK.{index}", parent=parent,
                                     cause=cause, destination=f"{host}:5060/udp"),
                          callee=ev.Callee(request_uri=self.dialled, to_uri=self.dialled, target=target))

    def progress(self, leg: int, code: int = 180, reason: str = "Ringing"):
        return self._emit(ev.CallProgress, leg=leg, code=code, reason=reason, to_tag=f"tt{leg}")

    def leg_failed(self, leg: int, code: int, reason: str):
        return self._emit(ev.LegFailed, leg=leg, code=code, reason=reason)

    def answer(self, leg: int, max_duration_s: int = 3600):
        self.to_tag = f"tt{leg}"
        return self._emit(ev.CallAnswered, leg=leg, code=200, reason="OK",
                          callee_user_agent="Gateway/2.3", max_duration_s=max_duration_s)

    def ack(self, leg: int = 0):
        return self._emit(ev.CallAck, leg=leg)

    def failed(self, code: int, reason: str, *, by_proxy: bool = False):
        return self._emit(ev.CallFailed, code=code, reason=reason, by_proxy=by_proxy,
                          to_tag=f"sl-{code}")

    def cancel(self, reason: str | None = None):
        return self._emit(ev.CallCancel, reason=reason)

    def bye(self, by: str, leg: int = 0, reason: str | None = None):
        return self._emit(ev.CallBye, by=by, reason=reason, leg=leg)

    def timeout(self, max_duration_s: int, answered_ms: int):
        return self._emit(ev.DialogTimeout, max_duration_s=max_duration_s, answered_ms=answered_ms)

    def teardown(self, reason: str, result: str = "sent"):
        return self._emit(ev.DialogTeardown, command_id="c" + _event_id(), reason=reason,
                          result=result)

    def max_duration(self, seconds: int, result: str = "applied"):
        return self._emit(ev.MaxDurationSet, command_id="c" + _event_id(), max_duration_s=seconds,
                          result=result)

    # issue 14: media relay, media timeouts, session timers
    def media_stats(self, leg: int | None = 0, *, caller: ev.MediaFlow | None = None,
                    callee: ev.MediaFlow | None = None, relay: str = "udp:127.0.0.1:2223"):
        return self._emit(ev.MediaStats, leg=leg, relay=relay, caller=caller or ev.MediaFlow(),
                          callee=callee or ev.MediaFlow())

    def media_timeout(self, last_media_ms: int, silent: str = "callee", leg: int | None = 0,
                      reason: str = "media timeout: callee silent for 30 s"):
        return self._emit(ev.MediaTimeout, silent=silent, last_media_ms=last_media_ms, leg=leg,
                          reason=reason)

    def session_expired(self, session_expires_s: int = 1800, last_refresh_ms: int = 0, leg: int | None = 0):
        return self._emit(ev.SessionExpired, session_expires_s=session_expires_s,
                          last_refresh_ms=last_refresh_ms or self.now, leg=leg)


def call_events(shape: str, call_id: str, t0: int, *, scale: float = 1.0,
                talk_ms: int = 60_000, proxy: str = "bench-1") -> list:
    """The events of one call of ``shape`` starting at ``t0``; every offset
    (ms in a real call) is multiplied by ``scale`` (e.g. 0.01 for a fast test)."""
    c = CallBuilder(call_id, t0, from_tag="ft" + call_id[-8:], proxy=proxy)

    def at(ms: float) -> CallBuilder:
        return c.at(int(ms * scale))

    at(0).invite()
    if shape == "not_found":
        at(2).failed(404, "Not Found", by_proxy=True)
        return c.events
    at(3).route(0)
    if shape in ("answered_caller_bye", "answered_callee_bye", "timeout", "teardown", "media_timeout",
                 "session_expired"):
        at(150).progress(0)
        at(3000).answer(0)
        at(3010).ack(0)
        if shape == "media_timeout":
            # the callee vanished after talk_ms; the proxy's poll read the stats, then ended the call
            last = c.t0 + int((3000 + talk_ms) * scale)
            at(3000 + talk_ms + 20_000).media_stats(0, caller=ev.MediaFlow(packets=4000, bytes=688_000,
                                                                           last_packet_ms=last + 20_000),
                                                    callee=ev.MediaFlow(packets=3000, bytes=516_000,
                                                                        last_packet_ms=last))
            at(3000 + talk_ms + 30_000).media_timeout(last, silent="callee")
        elif shape == "session_expired":
            at(3000 + talk_ms).session_expired(talk_ms // 1000, c.t0 + int(3000 * scale))
        elif shape == "timeout":
            at(3000 + talk_ms).timeout(talk_ms // 1000, c.t0 + int(3000 * scale))
        elif shape == "teardown":
            at(3000 + talk_ms).teardown("credit exhausted")
        else:
            at(3000 + talk_ms).bye("caller" if shape == "answered_caller_bye" else "callee")
    elif shape == "busy":
        at(150).progress(0)
        at(2000).leg_failed(0, 486, "Busy Here")
        at(2001).failed(486, "Busy Here")
    elif shape == "credit":
        at(40).leg_failed(0, 402, "Payment Required")
        at(41).failed(402, "Payment Required")
    elif shape == "cancel":
        at(150).progress(0)
        at(5000).cancel()
        at(5020).leg_failed(0, 487, "Request Terminated")
        at(5021).failed(487, "Request Terminated")
    elif shape == "no_answer":
        at(150).progress(0)
        at(30_000).leg_failed(0, 408, "Request Timeout")
        at(30_001).failed(408, "Request Timeout", by_proxy=True)
    elif shape == "forked":
        at(4).route(1, cause="fork", host="198.51.100.8")
        at(150).progress(0)
        at(160).progress(1)
        at(4000).answer(1)
        at(4005).leg_failed(0, 487, "Request Terminated")
        at(4010).ack(1)
        at(4000 + talk_ms).bye("callee", leg=1)
    elif shape == "failover":
        at(500).leg_failed(0, 503, "Service Unavailable")
        at(501).route(1, parent=0, cause="failover", host="198.51.100.9")
        at(700).progress(1, 183, "Session Progress")
        at(3500).answer(1)
        at(3510).ack(1)
        at(3500 + talk_ms).bye("caller", leg=1)
    else:
        raise ValueError(f"unknown shape {shape}")
    return c.events


# --- load --------------------------------------------------------------------------

@dataclass
class ProducedCall:
    call_id: str
    shape: str
    end_wall_ms: int = 0          # when the call's last event was sent (BYE-to-row latency)


def _shape_cycle(seed: int = 7):
    rng = random.Random(seed)
    shapes, weights = zip(*MIX.items())
    while True:
        yield rng.choices(shapes, weights)[0]


SEND_TICK_MS = 5      # the producer sends what is due every this often, as one batch per partition


class CallLoad:
    """``n`` calls starting at ``rate`` calls/s; each call's events are sent at
    their (scaled) offsets, so many calls are in progress at once, as on a real
    proxy.  Event ``ts_ms`` is the wall clock at sending.

    Built to stay ahead of the processors it loads: ``prepare`` builds every
    call, gives each its partition (the key's murmur2, as the proxy's producer
    does) and sorts the events into ``SEND_TICK_MS`` ticks before the clock
    starts; ``send`` then encodes what is due each tick and sends it as one
    record batch per partition (``send_batch``: no per-record future, no
    per-record accumulator work)."""

    def __init__(self, bootstrap: str, n: int, rate: float, *, topic: str = "sip.events",
                 talk_ms: int = 2000, time_scale: float = 0.05, prefix: str | None = None) -> None:
        self.bootstrap, self.n, self.rate, self.topic = bootstrap, n, rate, topic
        self.talk_ms, self.time_scale = talk_ms, time_scale
        self.prefix = prefix or f"bench-{os.getpid()}-{int(time.time())}"
        self.calls: list[ProducedCall] = []
        self.ticks: list[tuple[int, list]] = []     # (due offset ms, [(partition, key, event, ended call)])
        self.producer = None
        self.partitions = 0
        self.events = 0
        self.max_lag_ms = 0.0           # how late the producer sent a tick, at worst
        self.starts_s = 0.0             # seconds it took to start every call (n / rate if on time)
        self.longest_ms = 0             # the longest call, first event to last (scaled)

    async def prepare(self) -> "CallLoad":
        from aiokafka import AIOKafkaProducer

        from cdr.drain import partition_for
        from proxy.infra.config import KafkaSettings
        from proxy.infra.kafka import producer_kwargs

        settings = KafkaSettings(bootstrap_servers=self.bootstrap)
        self.producer = producer = AIOKafkaProducer(
            **producer_kwargs(settings, linger_ms=5, max_batch_size=1 << 20))
        await producer.start()
        self.partitions = partitions = len(await producer.partitions_for(self.topic))
        shapes = _shape_cycle()
        schedule = []
        for i in range(self.n):
            shape = next(shapes)
            start_ms = i * 1000.0 / self.rate
            events = call_events(shape, f"{self.prefix}-{i:07d}@bench", 0, scale=self.time_scale,
                                 talk_ms=self.talk_ms)
            call = ProducedCall(events[0].call_id, shape)
            self.calls.append(call)
            self.events += len(events)
            self.longest_ms = max(self.longest_ms, events[-1].ts_ms)
            key = events[0].call_id.encode()
            partition = partition_for(key, partitions)
            for j, event in enumerate(events):
                offset_ms = start_ms + event.ts_ms
                schedule.append((offset_ms, i, j, partition, key, event,
                                 call if j == len(events) - 1 else None))
        schedule.sort(key=lambda item: item[:3])
        for offset_ms, _i, _j, partition, key, event, ended in schedule:
            due = int(offset_ms // SEND_TICK_MS) * SEND_TICK_MS
            if not self.ticks or self.ticks[-1][0] != due:
                self.ticks.append((due, []))
            self.ticks[-1][1].append((partition, key, event, int(offset_ms), ended))
        return self

    async def send(self) -> list[ProducedCall]:
        """Send on schedule; returns the calls with the wall time their last
        event was acknowledged by the broker."""
        from cdr.drain import PartitionBatcher

        producer, topic = self.producer, self.topic
        assert producer is not None, "prepare() first"
        encode, replace = ev.encode, msgspec.structs.replace
        loop = asyncio.get_running_loop()
        wall0 = clock.now_ms()
        t_start = loop.time()
        pending: list = []
        out = PartitionBatcher(producer, topic, self.partitions)

        def acked(call: ProducedCall):
            def done(_f) -> None:
                call.end_wall_ms = clock.now_ms()
            return done

        last_start_ms = (self.n - 1) * 1000.0 / self.rate
        try:
            for due_ms, records in self.ticks:
                delay = t_start + due_ms / 1000 - loop.time()
                if delay > 0.001:
                    await asyncio.sleep(delay)
                self.max_lag_ms = max(self.max_lag_ms, -delay * 1000)
                if not self.starts_s and due_ms + SEND_TICK_MS > last_start_ms:
                    self.starts_s = loop.time() - t_start + 1 / self.rate
                futures = set()
                for partition, key, event, offset_ms, call in records:
                    done = out.send(partition, key, encode(replace(event, ts_ms=wall0 + offset_ms)))
                    futures.add(done)
                    if call is not None:
                        done.add_done_callback(acked(call))
                pending.extend(futures)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return self.calls


async def produce_calls_async(bootstrap: str, n: int, rate: float, **kwargs) -> list[ProducedCall]:
    """``CallLoad(bootstrap, n, rate, **kwargs)`` prepared, then sent."""
    return await (await CallLoad(bootstrap, n, rate, **kwargs).prepare()).send()


def produce_calls(bootstrap: str, n: int, rate: float, **kwargs) -> list[ProducedCall]:
    """Synchronous ``produce_calls_async``."""
    return asyncio.run(produce_calls_async(bootstrap, n, rate, **kwargs))


# --- processor workers ---------------------------------------------------------------

READY_LINE = "[^Worker]: Ready"


class Worker:
    """``python -m cdr`` as a subprocess (own session, stopped by its PID)."""

    def __init__(self, bootstrap: str, data_dir: Path, config: Path, worker_id: int = 0,
                 log_path: Path | None = None) -> None:
        self.bootstrap, self.data_dir, self.config, self.worker_id = bootstrap, data_dir, config, worker_id
        self.log_path = log_path or Path(data_dir) / f"cdr-worker-{worker_id}.log"
        self.process: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self) -> "Worker":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        out = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cdr", "--data-dir", str(self.data_dir), "--config",
                 str(self.config), "--bootstrap", self.bootstrap, "--worker-id", str(self.worker_id)],
                cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            out.close()
        return self

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_LINE in self.log_text():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"cdr worker exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"cdr worker not ready within {timeout}s:\n{self.log_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker used so far (0 once it is gone)."""
        return process_cpu_seconds(self.process.pid) if self.process is not None else 0.0

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, 9)
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (faust stops cleanly), SIGKILL if it takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, 15)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Profiler:
    """py-spy recording one process while a run lasts (``--profile``: a tool,
    not a dependency; collapsed stacks, ``--format raw``)."""

    def __init__(self, pid: int, path: Path, *, idle: bool = False) -> None:
        # idle: samples of waiting threads too (where a worker that is not
        # CPU-bound waits)
        self.process = subprocess.Popen(
            [shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
             "--nonblocking", "--output", str(path), *(["--idle"] if idle else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, 2)        # SIGINT: py-spy writes its output and exits
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, 9)
                self.process.wait()


def write_config(path: Path, sections: dict[str, dict] | None = None, **cdr) -> Path:
    """A sipledger.toml with ``[cdr]`` = ``cdr`` and any other ``sections``."""
    sections = {**(sections or {}), "cdr": {**(sections or {}).get("cdr", {}), **cdr}}
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- measuring at cdr.records --------------------------------------------------------

async def collect_rows(bootstrap: str, topic: str, expected_calls: int, *, timeout: float,
                       arrivals: dict | None = None, stop: asyncio.Event | None = None) -> dict:
    """Read ``topic`` from the beginning until rows of ``expected_calls`` complete
    calls have arrived (or ``timeout``).  Returns {cdr_id: (arrival wall ms of
    its last row, [rows])}."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from cdr.processor import decode_row
    from proxy.infra.config import KafkaSettings
    from proxy.infra.kafka import consumer_kwargs, topic_partitions

    settings = KafkaSettings(bootstrap_servers=bootstrap)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (partitions := await topic_partitions(settings, topic)) is None:
        if loop.time() > deadline:
            return {}
        await asyncio.sleep(0.2)
    consumer = AIOKafkaConsumer(**consumer_kwargs(settings, enable_auto_commit=False,
                                                  max_partition_fetch_bytes=4 << 20))
    await consumer.start()
    calls: dict[str, tuple[int, list]] = {} if arrivals is None else arrivals
    complete = 0
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while loop.time() < deadline and complete < expected_calls:
            batch = await consumer.getmany(timeout_ms=200, max_records=20000)
            now = clock.now_ms()
            for records in batch.values():
                for record in records:
                    row = decode_row(record.value)
                    _, rows = calls.get(row.cdr_id, (0, []))
                    if any(r == row for r in rows):
                        continue                 # an identical duplicate
                    rows.append(row)
                    calls[row.cdr_id] = (now, rows)
                    if len(rows) == row.legs:
                        complete += 1
    finally:
        await consumer.stop()
    return calls


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _throughput(arrivals: list[float], t0: float, offered: dict, mode: str) -> float:
    """Calls/s out of the processor.  Catch-up: every call over the time to the
    last row.  Sustained: the rows that arrived between the moment the longest
    call started at t0 would have ended and the last call's start, over that
    window: the steady state, without the ramp-up and the last calls' own
    duration (which bound a whole-run average below the offered rate)."""
    if not arrivals:
        return 0.0
    if mode == "sustained" and offered.get("starts_s"):
        start, end = t0 + offered["longest_s"], t0 + offered["starts_s"]
        if end - start >= 1.0:
            return round(sum(1 for t in arrivals if start <= t < end) / (end - start), 1)
    return round(len(arrivals) / max(arrivals[-1] - t0, 1e-9), 1)


def run_fold(args: argparse.Namespace) -> dict:
    """``--mode fold``: the processor's per-event work without Kafka or faust,
    in this process: each record decoded (``events.read``), stepped through
    ``CdrProcessor._step`` (the shared fold, its table and counters) and the
    rows of finished calls encoded as published.  CPU per call, best of
    ``--repeat``: the fold's share of a worker, free of the broker's and the
    host's noise."""
    import hashlib

    from cdr.processor import CdrProcessor, Stats, encode_row

    shapes = _shape_cycle()
    records = []
    for i in range(args.calls):
        events = call_events(next(shapes), f"bench-{i:07d}@bench", 1_767_225_600_000 + i,
                             scale=args.time_scale, talk_ms=args.talk_ms)
        records += [(event.ts_ms, i, j, ev.encode(event)) for j, event in enumerate(events)]
    records.sort()                           # calls interleaved as on the topic
    values = [value for *_, value in records]

    def once() -> tuple[float, int, str]:
        proc = CdrProcessor.__new__(CdrProcessor)
        proc.stats, proc.window_ms, proc._metrics_on = Stats(), 3_600_000, False
        table: dict = {}
        digest = hashlib.sha1()
        start = time.process_time()
        for value in values:
            event = ev.read(value)
            key = event.call_id.encode()
            finished: list = []
            proc._step(key, table.get(key), event, 0, 0, table, finished)
            for _, _, rows in finished:
                for row in rows:
                    digest.update(encode_row(row))
        return time.process_time() - start, proc.stats.counts["rows"], digest.hexdigest()

    runs = [once() for _ in range(args.repeat)]
    best = min(cpu for cpu, _, _ in runs)
    return {"mode": "fold", "calls": args.calls, "events": len(values), "rows": runs[0][1],
            "rows_sha1": runs[0][2], "cpu_us_per_call": round(best * 1e6 / args.calls, 1),
            "cpu_us_per_event": round(best * 1e6 / len(values), 2), "load_average": os.getloadavg()[0]}


def run(args: argparse.Namespace) -> dict:
    from api.broker import EmbeddedBroker
    from proxy.contract.cdr import cdr_id_for
    from tests.harness.broker import create_standard_topics

    work = Path(tempfile.mkdtemp(prefix="cdr-bench-"))
    broker = None
    workers: list[Worker] = []
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            broker = EmbeddedBroker(log_path=work / "tansu.log").start()
            create_standard_topics(broker)
            bootstrap = broker.bootstrap
        config = write_config(work / "sipledger.toml", batch_size=args.batch_size,
                              batch_window_ms=args.batch_window_ms, silence_seconds=3600,
                              app_id=f"bench-cdr-{os.getpid()}")
        preloaded: list[ProducedCall] = []
        if args.mode == "catchup":       # the backlog first, then the processor alone
            preloaded = produce_calls(bootstrap, args.calls, 1e9, talk_ms=args.talk_ms,
                                      time_scale=0.001)
        workers = [Worker(bootstrap, work, config, i).start() for i in range(args.workers)]
        for w in workers:
            w.wait_ready(60)
        if args.mode == "sustained":
            time.sleep(1 if args.workers == 1 else 6)    # let a multi-worker group settle

        profiler = (Profiler(workers[0].process.pid, Path(args.profile), idle=args.profile_idle)
                    if args.profile else None)
        cpu0 = [w.cpu_seconds() for w in workers]

        offered: dict = {}

        async def main() -> tuple[list[ProducedCall], dict, float, float]:
            arrivals: dict = {}
            load = None if preloaded else await CallLoad(
                bootstrap, args.calls, args.rate, talk_ms=args.talk_ms,
                time_scale=args.time_scale).prepare()
            offered["own0"] = time.process_time()       # the bench's CPU from here: send + collect
            collector = asyncio.create_task(collect_rows(bootstrap, "cdr.records", args.calls,
                                                         timeout=args.timeout, arrivals=arrivals))
            t0 = time.time()
            calls = preloaded if load is None else await load.send()
            t_produced = time.time()
            if load is not None:
                offered.update(starts_s=load.starts_s, max_lag_ms=load.max_lag_ms, events=load.events,
                               longest_s=load.longest_ms / 1000)
            await collector
            return calls, arrivals, t0, t_produced

        try:
            calls, arrivals, t0, t_produced = asyncio.run(main())
        finally:
            if profiler is not None:
                profiler.stop()
        worker_cpu = sum(w.cpu_seconds() - c for w, c in zip(workers, cpu0))
        own_cpu = time.process_time() - offered["own0"]
        by_call = {cdr_id_for(c.call_id, "ft" + c.call_id[-8:]): c for c in calls}
        done = [(arrivals[cid][0], c) for cid, c in by_call.items()
                if cid in arrivals and len(arrivals[cid][1]) == arrivals[cid][1][0].legs]
        last_arrival = max((t for t, _ in done), default=0) / 1000
        latencies = [t - c.end_wall_ms for t, c in done if c.end_wall_ms and args.mode == "sustained"]
        first_row = min((t for t, _ in done), default=0) / 1000
        result = {
            "mode": args.mode, "calls": args.calls, "offered_rate": args.rate, "workers": args.workers,
            "batch_size": args.batch_size, "complete": len(done),
            "produce_s": round(t_produced - t0, 2),
            # calls started per second (the last call's start, not its end: a call lasts seconds)
            "achieved_offered_rate": round(args.calls / max(offered.get("starts_s") or (t_produced - t0),
                                                            1e-9), 1),
            "producer_max_lag_ms": round(offered.get("max_lag_ms", 0.0), 1),
            "calls_per_s": _throughput(sorted(t / 1000 for t, _ in done), t0, offered, args.mode),
            "drain_after_produce_s": round(last_arrival - t_produced, 2) if done else None,
            "last_event_to_row_p50_ms": round(_percentile(latencies, 0.5), 1),
            "last_event_to_row_p99_ms": round(_percentile(latencies, 0.99), 1),
            "events": offered.get("events") or sum(len(call_events(c.shape, "x", 0)) for c in calls),
            "first_row_after_s": round(first_row - t0, 2) if done else None,
            "worker_cpu_s": round(worker_cpu, 2),
            "worker_cpu_ms_per_call": round(worker_cpu * 1000 / max(len(done), 1), 3),
            "bench_cpu_s": round(own_cpu, 2),
            "load_average": os.getloadavg()[0],
        }
        return result
    finally:
        for w in workers:
            w.stop()
        if broker is not None:
            broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("sustained", "catchup", "fold"), default="sustained",
                        help="sustained: produce at --rate while the processor runs; catchup: "
                             "produce everything first, then time the processor draining it; "
                             "fold: the processor's per-event work in this process, no broker")
    parser.add_argument("--repeat", type=int, default=3, help="--mode fold: runs (the best counts)")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000, help="new calls per second")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-window-ms", type=int, default=20)
    parser.add_argument("--talk-ms", type=int, default=20000, help="answered call length (before scaling)")
    parser.add_argument("--time-scale", type=float, default=0.1,
                        help="call timelines are compressed by this factor")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="py-spy (collapsed stacks) of worker 0 while the calls run")
    parser.add_argument("--profile-idle", action="store_true",
                        help="with --profile: sample waiting threads too")
    args = parser.parse_args(argv)
    if args.mode == "fold":
        result = run_fold(args)
        print(f"fold: {result['calls']} calls, {result['events']} events, {result['rows']} rows: "
              f"{result['cpu_us_per_call']} us CPU per call ({result['cpu_us_per_event']} per event), "
              f"load {result['load_average']:.2f}")
        print("RESULT " + json.dumps(result))
        return 0
    result = run(args)
    if args.mode == "sustained":
        print(f"calls {result['complete']}/{result['calls']} complete, offered {args.rate:g}/s "
              f"(achieved {result['achieved_offered_rate']}/s), {result['events']} events")
    else:
        print(f"calls {result['complete']}/{result['calls']} complete from a backlog of "
              f"{result['events']} events")
    print(f"sustained {result['calls_per_s']} calls/s through the processor "
          f"({args.workers} worker(s), batch {args.batch_size}); drained "
          f"{result['drain_after_produce_s']} s after the last event")
    if args.mode == "sustained":
        print(f"last event -> CDR row on cdr.records: p50 {result['last_event_to_row_p50_ms']} ms, "
              f"p99 {result['last_event_to_row_p99_ms']} ms")
    print(f"CPU: workers {result['worker_cpu_s']} s = {result['worker_cpu_ms_per_call']} ms per call; "
          f"the bench's producer + collector {result['bench_cpu_s']} s")
    print(f"host load average {os.getloadavg()[0]:.2f} (other processes share the cores)")
    print("RESULT " + json.dumps(result))
    return 0 if result["complete"] == result["calls"] else 1


if __name__ == "__main__":
    sys.exit(main())
