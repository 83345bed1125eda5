"""Credit control benchmark: authorization latency and teardown latency under load.

    .venv/bin/python bench/credit_control.py [--accounts 500] [--closed 20000] [--rate 2000]
                                             [--seconds 10] [--calls 200]
    .venv/bin/python bench/credit_control.py --mode answered [--accounts 1000] [--calls 6000] [--rate 200]

Starts an embedded Tansu broker and the billing service (``python -m billing``,
the real process) on a scratch data dir with ``--accounts`` prepaid accounts,
then measures:

1. authorization round trip (UDP AuthorizeRequest -> AuthorizeResponse), closed
   loop: one request in flight, ``--closed`` requests -- the latency a proxy
   adds to call setup;
2. the same, open loop at ``--rate`` requests/s for ``--seconds`` while
   ``--calls`` answered calls run out of credit (the service is extending
   reservations and timing teardowns at the same time);
3. teardown timing of those calls: each has credit for 3..8 s; the service must
   put a Teardown on ``call.control`` at the paid-until moment (it aims
   ``teardown_lead_ms`` = 300 ms before it, so the call ends inside its paid
   time).  Reported: arrival relative to paid-until (target <= +1000 ms) and
   the command path latency (arrival - the moment the service aimed for).

``--mode answered`` measures instead what the product path costs billing per
call (issue 19: billing was 1.4-1.8 ms CPU a call under SIPp): ``--calls``
answered calls at ``--rate`` calls/s over ``--accounts`` prepaid accounts,
each as the proxy makes it: an authorization datagram, then
``invite.received``, ``call.answered``, ``call.bye`` on ``sip.events``.  It
waits until every call's reservation is on ``ledger.events`` and reports the
service's CPU per answered call (``--profile``: py-spy over that window).

Latencies are measured by this client (Python, same 2 cores), so they include
the client's own overhead: an upper bound of what the service adds.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from api.broker import EmbeddedBroker  # noqa: E402
from billing.client import BillingClient  # noqa: E402
from billing.rating.model import Rate, RatePlan, max_duration  # noqa: E402
from billing.rating.store import RatesStore  # noqa: E402
from proxy.contract import commands, credit  # noqa: E402
from proxy.contract import events as ev  # noqa: E402
from proxy.contract.ledger import decode_event  # noqa: E402
from proxy.infra.config import (
    BillingSettings,  # noqa: E402
    KafkaSettings,  # noqa: E402
)
from proxy.infra.kafka import consumer_kwargs, ensure_topics, producer_kwargs  # noqa: E402

NUMBER = "4930123456"
LEAD_MS = 300


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def summary(name: str, values: list[float], unit: str = "ms") -> str:
    if not values:
        return f"{name}: no samples"
    return (f"{name}: n={len(values)} p50={pct(values, .5):.3f} p90={pct(values, .9):.3f} "
            f"p99={pct(values, .99):.3f} p99.9={pct(values, .999):.3f} max={max(values):.3f} "
            f"min={min(values):.3f} {unit}")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds: on a shared machine CPU per
    authorization is the figure that compares runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """utime + stime per thread (tid -> seconds): the main (event loop) thread
    is ``pid``; the others are the ledger writer, the to_thread executor, ..."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def provision(data: Path, accounts: list[str], credits: dict[str, str]) -> RatePlan:
    plan = RatePlan("bench", [Rate(prefix="49", price_per_min=Decimal("0.60"), currency="EUR",
                                   first_increment=1, next_increment=1, decimals=4, rounding="up"),
                              Rate(prefix="", price_per_min=Decimal("1.00"), currency="EUR",
                                   first_increment=60, next_increment=6, connect_fee=Decimal("0.05"))])
    rates = RatesStore(BillingSettings().database_url(data))
    rates.create_schema()
    rates.put_plans({"bench": plan})
    for account in accounts:
        rates.assign(account, "bench")
    rates.close()
    client = BillingClient(data)
    for account in accounts:
        client.put_account(account, {"kind": "prepaid"}, create=True)
        client.money(account, "topup", credits[account], "initial")
    return plan


def start_service(data: Path, config: Path, bootstrap: str) -> tuple[subprocess.Popen, int]:
    err = open(data / "billing.stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "billing", "--data-dir", str(data), "--config", str(config),
                             "--bootstrap", bootstrap], cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
    line = proc.stdout.readline()
    if not line.startswith("BILLING READY"):
        raise SystemExit(f"billing did not start: {line!r}: {(data / 'billing.stderr').read_text()[-2000:]}")
    return proc, int(line.split("udp=")[1])


def closed_loop(port: int, accounts: list[str], n: int) -> list[float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    out = []
    for i in range(n):
        req = credit.AuthorizeRequest(id=uuid.uuid4().hex, ts_ms=now_ms(), call_id=f"cl-{i}",
                                      account=accounts[i % len(accounts)], destination=NUMBER,
                                      request_uri=f"sip:{NUMBER}@x", caller_uri="sip:a@x")
        data = credit.encode(req)
        t = time.perf_counter_ns()
        sock.sendto(data, ("127.0.0.1", port))
        reply = credit.decode_response(sock.recv(4096))
        out.append((time.perf_counter_ns() - t) / 1e6)
        assert reply.id == req.id
    sock.close()
    return out


class OpenLoop(asyncio.DatagramProtocol):
    def __init__(self):
        self.sent: dict[str, int] = {}
        self.rtt: list[float] = []
        self.refused = 0

    def datagram_received(self, data, addr):
        t = time.perf_counter_ns()
        reply = credit.decode_response(data)
        start = self.sent.pop(reply.id, None)
        if start is not None:
            self.rtt.append((t - start) / 1e6)
            self.refused += not reply.allowed


async def open_loop(port: int, accounts: list[str], rate: int, seconds: float) -> OpenLoop:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(OpenLoop, remote_addr=("127.0.0.1", port))
    interval = 1.0 / rate
    start = time.perf_counter()
    i = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed / interval) + 1
        while i < due:
            req = credit.AuthorizeRequest(id=uuid.uuid4().hex, ts_ms=now_ms(), call_id=f"ol-{i}",
                                          account=accounts[i % len(accounts)], destination=NUMBER,
                                          request_uri="sip:x@y", caller_uri="sip:a@x")
            proto.sent[req.id] = time.perf_counter_ns()
            transport.sendto(credit.encode(req))
            i += 1
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.5)
    transport.close()
    proto.lost = len(proto.sent)
    return proto


async def _clients(kafka: KafkaSettings, topic: str) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """A consumer of ``topic`` from its end (what billing writes from now on) and a producer."""
    consumer = AIOKafkaConsumer(**consumer_kwargs(kafka, enable_auto_commit=False))
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    producer = AIOKafkaProducer(**producer_kwargs(kafka))
    await producer.start()
    return consumer, producer


async def exhausting_calls(kafka: KafkaSettings, plan: RatePlan, callers: list[str], credits: dict[str, str],
                           ready: asyncio.Event) -> tuple[list[float], list[float], int]:
    """Answer one call per caller at once; collect each Teardown's timing."""
    consumer, producer = await _clients(kafka, "call.control")
    paid_until: dict[str, int] = {}
    base = dict(proxy="bench", from_tag="ft")
    for i, account in enumerate(callers):
        call_id = f"bench-{i}-{uuid.uuid4().hex[:8]}"
        t = now_ms()
        await producer.send("sip.events", ev.encode(ev.InviteReceived(
            id=uuid.uuid4().hex, ts_ms=t, call_id=call_id, branch="z9hG4bK" + call_id, cseq=1,
            caller=ev.Caller(from_uri=f"sip:{account}", account=account),
            callee=ev.Callee(request_uri=f"sip:{NUMBER}@x", to_uri=f"sip:{NUMBER}@x"),
            source=ev.Source(ip="127.0.0.1", port=5060, transport="udp"), **base)), key=call_id.encode())
        answer = now_ms()
        await producer.send("sip.events", ev.encode(ev.CallAnswered(
            id=uuid.uuid4().hex, ts_ms=answer, call_id=call_id, leg=0, code=200, reason="OK",
            max_duration_s=3600, **base)), key=call_id.encode())
        paid_until[call_id] = answer + max_duration(plan, NUMBER, answer, Decimal(credits[account])) * 1000
    await producer.flush()
    ready.set()
    late, path = [], []
    deadline = time.monotonic() + 30 + max(paid_until.values()) / 1000 - time.time()
    while paid_until and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=50)
        t = time.time() * 1000
        for records in batch.values():
            for r in records:
                command = commands.decode(r.value)
                target = paid_until.pop(command.call_id, None)
                if target is not None and isinstance(command, commands.Teardown):
                    late.append(t - target)
                    path.append(t - (target - LEAD_MS))
    missing = len(paid_until)
    await producer.stop()
    await consumer.stop()
    return late, path, missing


def _open_loop_process(port: int, accounts: list[str], rate: int, seconds: float) -> tuple[list[float], int, int]:
    """The authorization load in a process of its own: its latencies are not
    held up by this process' Kafka work."""
    result = asyncio.run(open_loop(port, accounts, rate, seconds))
    return result.rtt, result.lost, result.refused


async def under_load(port, accounts, kafka, plan, callers, credits, rate, seconds):
    import concurrent.futures
    import multiprocessing

    ready = asyncio.Event()
    calls = asyncio.create_task(exhausting_calls(kafka, plan, callers, credits, ready))
    await ready.wait()
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        rtt, lost, refused = await loop.run_in_executor(pool, _open_loop_process, port, accounts, rate, seconds)
    late, path, missing = await calls
    return (rtt, lost, refused), late, path, missing


def call_events(call_id: str, account: str) -> list[ev.CallEvent]:
    """What the proxy puts on sip.events for one answered call (the events billing acts on)."""
    t, base = now_ms(), dict(call_id=call_id, proxy="bench", from_tag="ft")
    return [ev.InviteReceived(id=uuid.uuid4().hex, ts_ms=t, branch="z9hG4bK" + call_id, cseq=1,
                              caller=ev.Caller(from_uri=f"sip:{account}", account=account),
                              callee=ev.Callee(request_uri=f"sip:{NUMBER}@x", to_uri=f"sip:{NUMBER}@x"),
                              source=ev.Source(ip="127.0.0.1", port=5060, transport="udp"), **base),
            ev.CallAnswered(id=uuid.uuid4().hex, ts_ms=t, leg=0, code=200, reason="OK", max_duration_s=3600,
                            **base),
            ev.CallBye(id=uuid.uuid4().hex, ts_ms=t, by="caller", **base)]


async def answered_calls(port: int, kafka: KafkaSettings, accounts: list[str], calls: int, rate: int,
                         on_started: Callable[[], None]) -> tuple[float, int, OpenLoop]:
    """Feed ``calls`` answered calls at ``rate`` calls/s; returns once every
    call's reservation is on ledger.events (or 60 s passed without progress):
    (seconds from the first call, reservations seen, the authorizations)."""
    consumer, producer = await _clients(kafka, "ledger.events")
    loop = asyncio.get_running_loop()
    transport, auth = await loop.create_datagram_endpoint(OpenLoop, remote_addr=("127.0.0.1", port))
    expected = {f"ans-{i}-{uuid.uuid4().hex[:8]}" for i in range(calls)}
    reserved: set[str] = set()

    async def watch() -> None:
        while len(reserved) < calls:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    event = decode_event(r.value)
                    if event.kind == "reservation" and event.call_id in expected:
                        reserved.add(event.call_id)

    watcher = asyncio.create_task(watch())
    on_started()
    start = time.perf_counter()
    for i, call_id in enumerate(sorted(expected, key=lambda c: int(c.split("-")[1]))):
        if (ahead := i / rate - (time.perf_counter() - start)) > 0:
            await asyncio.sleep(ahead)
        account = accounts[i % len(accounts)]
        req = credit.AuthorizeRequest(id=uuid.uuid4().hex, ts_ms=now_ms(), call_id=call_id, account=account,
                                      destination=NUMBER, request_uri=f"sip:{NUMBER}@x", caller_uri="sip:a@x")
        auth.sent[req.id] = time.perf_counter_ns()
        transport.sendto(credit.encode(req))
        for event in call_events(call_id, account):
            await producer.send("sip.events", ev.encode(event), key=call_id.encode())
    await producer.flush()
    seen = -1
    while not watcher.done() and seen != len(reserved):       # stop once 60 s bring nothing new
        seen = len(reserved)
        await asyncio.wait([watcher], timeout=60)
    elapsed = time.perf_counter() - start
    watcher.cancel()
    transport.close()
    await producer.stop()
    await consumer.stop()
    return elapsed, len(reserved), auth


def run_answered(args, proc: subprocess.Popen, port: int, kafka: KafkaSettings, accounts: list[str]) -> int:
    spy = None
    cpu0 = 0.0

    def started() -> None:
        nonlocal spy, cpu0
        if args.profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", args.profile,
                                    "-f", "raw", "-r", "250", "-p", str(proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = cpu_s(proc.pid)
        threads0.update(thread_cpu_s(proc.pid))

    threads0: dict[int, float] = {}
    elapsed, reserved, auth = asyncio.run(answered_calls(port, kafka, accounts, args.calls, args.rate, started))
    cpu = cpu_s(proc.pid) - cpu0
    threads = {tid: t - threads0.get(tid, 0.0) for tid, t in thread_cpu_s(proc.pid).items()}
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"answered calls: {args.calls} at {args.rate}/s over {len(accounts)} accounts; reservations on "
          f"ledger.events {reserved} after {elapsed:.1f}s; authorizations answered {len(auth.rtt)}, "
          f"refused {auth.refused}", flush=True)
    print(f"  billing CPU {cpu:.2f}s = {cpu * 1000 / max(1, reserved):.3f} ms per answered call; {uptime}",
          flush=True)
    per_call = sorted(((t * 1000 / max(1, reserved), tid) for tid, t in threads.items() if t > 0), reverse=True)
    print("  by thread (ms per call): " + ", ".join(
        f"{'loop' if tid == proc.pid else tid} {ms:.3f}" for ms, tid in per_call[:6]), flush=True)
    if reserved < args.calls or auth.refused:
        print("FAIL: reservations missing or funded accounts refused", flush=True)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("authorize", "answered"), default="authorize",
                        help="answered: billing CPU per answered call (--calls at --rate calls/s)")
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--closed", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    parser.add_argument("--profile", default="", help="py-spy collapsed stacks (-f raw) of the service "
                                                      "during the open loop, to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-credit-"))
    data = work / "data"
    data.mkdir()
    rnd = random.Random(7)
    accounts = [f"user{i}@bench.test" for i in range(args.accounts)]
    callers = [f"caller{i}@bench.test" for i in range(args.calls if args.mode == "authorize" else 0)]
    credits = {a: "1000" for a in accounts}
    credits.update({c: str(Decimal(rnd.randint(30, 80)) / 1000) for c in callers})     # 3..8 s at 0.60/min
    broker = EmbeddedBroker(log_path=work / "tansu.log").start()
    proc = None
    status = 0
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        asyncio.run(ensure_topics(kafka, {"sip.events": kafka.partitions, "call.control": kafka.partitions}))
        t = time.perf_counter()
        plan = provision(data, accounts + callers, credits)
        print(f"provisioned {len(accounts) + len(callers)} accounts in {time.perf_counter() - t:.1f}s", flush=True)
        config = work / "sipledger.toml"
        config.write_text("[credit]\nteardown_lead_ms = %d\n" % LEAD_MS)
        proc, port = start_service(data, config, broker.bootstrap)
        if args.mode == "answered":
            status = run_answered(args, proc, port, kafka, accounts)
            return status
        closed_loop(port, accounts, 2000)                     # warm-up
        cpu0 = cpu_s(proc.pid)
        rtt = closed_loop(port, accounts, args.closed)
        closed_cpu = (cpu_s(proc.pid) - cpu0) * 1000 / len(rtt)
        print(summary(f"authorization RTT, closed loop ({args.closed} requests, 1 in flight)", rtt), flush=True)
        print(f"  service CPU per authorization (closed loop): {closed_cpu:.3f} ms", flush=True)
        spy = None
        if args.profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", args.profile,
                                    "-f", "raw", "-r", "250", "-p", str(proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = cpu_s(proc.pid)
        auth, late, path, missing = asyncio.run(under_load(port, accounts, kafka, plan, callers, credits,
                                                           args.rate, args.seconds))
        open_cpu = cpu_s(proc.pid) - cpu0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        rtts, lost, refused = auth
        print(summary(f"authorization RTT, open loop {args.rate}/s for {args.seconds:g}s (own process) during "
                      f"{args.calls} exhausting calls", rtts), flush=True)
        print(f"  sent {len(rtts) + lost}, answered {len(rtts)}, lost {lost}, refused {refused}; service CPU "
              f"{open_cpu / max(1, len(rtts)) * 1000:.3f} ms per authorization (all its work included), "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        print(summary(f"teardown arrival vs paid-until ({args.calls} calls, lead {LEAD_MS} ms; "
                      "<= +1000 is the target)", late), flush=True)
        print(summary("teardown command path (arrival - aimed moment: timer + Kafka + consumer)", path),
              flush=True)
        print(f"  teardowns missing: {missing}; within paid time: {sum(1 for x in late if x <= 0)}/{len(late)}; "
              f"within +1 s: {sum(1 for x in late if x <= 1000)}/{len(late)}", flush=True)
        if missing or not rtts or refused:
            print("FAIL: teardowns missing, no authorization answered, or funded accounts refused", flush=True)
            status = 1
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            if args.mode == "answered":                 # its counters: ledger commits, events, steps
                print(next((line for line in (data / "billing.stderr").read_text().splitlines()
                            if line.startswith("BILLING STATS")), "no BILLING STATS"), flush=True)
        broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
