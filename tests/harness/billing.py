"""Run the billing service (``python -m billing``) against the real broker, and
feed it what the proxy and the CDR processor would: call events on its own
(unique) topics, CDR legs, and read its teardown commands back."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from billing.rating.model import Rate, RatePlan
from billing.rating.store import RatesStore
from cdr.processor import encode_row
from proxy.contract import commands
from proxy.contract import events as ev
from proxy.contract.cdr import CdrLeg, cdr_id_for
from proxy.infra import clock
from proxy.infra.config import BillingSettings, KafkaSettings
from proxy.infra.kafka import consumer_kwargs, ensure_topics, topic_partitions
from tests.harness.poll import aeventually

REPO = Path(__file__).resolve().parents[2]


class Topics:
    """Unique topic names for one test: nothing is shared with other tests."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.sip_events = f"t.sip.{tag}"
        self.call_control = f"t.control.{tag}"
        self.cdr = f"t.cdr.{tag}"
        self.calls = f"t.bcalls.{tag}"
        self.ledger = f"t.ledger.{tag}"
        self.notifications = f"t.notify.{tag}"
        self.group = f"t.billing.{tag}"

    def config(self, credit_extra: str = "") -> str:
        return (f'[topics]\nsip_events = "{self.sip_events}"\ncall_control = "{self.call_control}"\n'
                f'[cdr]\nrecords_topic = "{self.cdr}"\n'
                f'[ledger]\ncalls_topic = "{self.calls}"\nevents_topic = "{self.ledger}"\n'
                f'notifications_topic = "{self.notifications}"\n'
                f'[credit]\ngroup_id = "{self.group}"\n{credit_extra}\n')

    def all(self, partitions: int = 6) -> dict[str, int]:
        return {name: partitions for name in (self.sip_events, self.call_control, self.cdr, self.calls,
                                              self.ledger, self.notifications)}


def provision_plan(data_dir: Path, account: str, plan: RatePlan) -> None:
    store = RatesStore(BillingSettings().database_url(data_dir))
    store.create_schema()
    store.put_plans({plan.name: plan})
    store.assign(account, plan.name)
    store.close()


def simple_plan(price: str = "0.60", first: int = 1, nxt: int = 1, fee: str = "0",
                name: str = "retail") -> RatePlan:
    return RatePlan(name, [Rate(prefix="49", price_per_min=Decimal(price), currency="EUR",
                                first_increment=first, next_increment=nxt, connect_fee=Decimal(fee),
                                decimals=4, rounding="up")])


class BillingProcess:
    def __init__(self, data_dir: Path, config_file: Path, bootstrap: str):
        self.data_dir, self.config_file, self.bootstrap = data_dir, config_file, bootstrap
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.stderr_path = data_dir / "billing.stderr"

    def start(self, timeout: float = 60.0) -> "BillingProcess":
        err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "billing", "--data-dir", str(self.data_dir), "--config",
             str(self.config_file), "--bootstrap", self.bootstrap],
            cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, env=os.environ.copy())
        err.close()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or not line[0].startswith("BILLING READY"):
            self.kill()
            raise RuntimeError(f"billing did not start: {line!r}\n{self.stderr_path.read_text()[-3000:]}")
        self.port = int(line[0].split("udp=")[1])
        return self

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- what the proxy publishes ----------------------------------------------------------

def _base(call_id: str, ts: int) -> dict:
    return dict(id=uuid.uuid4().hex, ts_ms=ts, call_id=call_id, from_tag="ft-" + call_id[-6:], proxy="test")


def invite(call_id: str, account: str, number: str, ts: int) -> bytes:
    return ev.encode(ev.InviteReceived(
        **_base(call_id, ts), branch="z9hG4bK" + call_id[-8:], cseq=1,
        caller=ev.Caller(from_uri=f"sip:{account}", account=account),
        callee=ev.Callee(request_uri=f"sip:{number}@example.test", to_uri=f"sip:{number}@example.test"),
        source=ev.Source(ip="127.0.0.1", port=5062, transport="udp")))


def answered(call_id: str, ts: int) -> bytes:
    return ev.encode(ev.CallAnswered(**_base(call_id, ts), leg=0, code=200, reason="OK", max_duration_s=3600))


def bye(call_id: str, ts: int) -> bytes:
    return ev.encode(ev.CallBye(**_base(call_id, ts), by="caller"))


def cdr_leg(call_id: str, account: str, number: str, answer_ms: int, end_ms: int) -> CdrLeg:
    from_tag = "ft-" + call_id[-6:]
    return CdrLeg(cdr_id=cdr_id_for(call_id, from_tag), leg=0, call_id=call_id, from_tag=from_tag,
                  account=account, dialled=f"sip:{number}@example.test", setup_ms=answer_ms - 2000,
                  answer_ms=answer_ms, end_ms=end_ms, duration_ms=end_ms - answer_ms,
                  billable_s=-(-(end_ms - answer_ms) // 1000), sip_code=200, disposition="answered",
                  call_disposition="answered", hangup_by="caller")


def encode_cdr(leg: CdrLeg) -> bytes:
    return encode_row(leg)


class ControlReader:
    """Reads ``call.control`` live (every partition from the end), noting when
    each command arrived (``proxy.infra.clock`` seconds, comparable with event times)."""

    def __init__(self, settings: KafkaSettings, topic: str):
        self.settings, self.topic = settings, topic
        self.received: list[tuple[float, commands.ControlCommand]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        count = await topic_partitions(self.settings, self.topic)
        self._consumer = AIOKafkaConsumer(**consumer_kwargs(self.settings, enable_auto_commit=False))
        await self._consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(count)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=50)
            now = clock.time()                # the service's clock: arrivals compare with its times
            for records in batch.values():
                for r in records:
                    self.received.append((now, commands.decode(r.value)))

    async def wait_for(self, call_id: str, timeout: float) -> tuple[float, commands.ControlCommand] | None:
        """The first command for ``call_id`` with its arrival time, or None after ``timeout``."""
        def arrived():
            return next(((at, command) for at, command in self.received if command.call_id == call_id), None)
        return await aeventually(arrived, f"a command for {call_id}", timeout, interval=0.01, fail=False)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()


async def create_topics(settings: KafkaSettings, topics: Topics) -> None:
    await ensure_topics(settings, topics.all(settings.partitions))
