"""The API process' halves against the real Tansu broker: the CDR sink and the
ledger sink (api/sinks.py) in process, read back through the app, and the
embedded-topology process itself (``python -m api.serve``).  The routes have
their own tests (tests/api)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal as D
from pathlib import Path

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.broker import free_port
from api.main import create_app
from api.state import AppState
from api.tokens import open_store
from billing.ledger.clickhouse import LedgerQueries, LedgerSink
from billing.ledger.store import LedgerStore
from cdr.store.queries import CdrFilter, CdrStore
from cdr.store.sink import CdrSink
from proxy.contract.cdr import CdrLeg, cdr_id_for
from proxy.infra.clickhouse.backend import ChdbBackend
from proxy.infra.clickhouse.migrate import migrate
from proxy.infra.kafka import consumer_kwargs, ensure_topics
from tests.harness.api import auth
from tests.harness.broker import produce, settings_for, unique_topic
from tests.harness.clickhouse import sample_t0
from tests.harness.poll import aeventually, eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


# -- the sink against the real broker ----------------------------------------------------------

def leg_json(leg: CdrLeg) -> tuple[bytes, bytes]:
    return leg.cdr_id.encode(), msgspec.json.encode(leg)


def synthetic_calls(n: int, t0: int) -> list[CdrLeg]:
    legs = []
    for i in range(n):
        cid = cdr_id_for(f"sink-{i}@test", "t")
        count = 2 if i % 5 == 0 else 1
        for leg in range(count):
            answered = leg == count - 1 and i % 2 == 0
            legs.append(CdrLeg(cdr_id=cid, leg=leg, legs=count, parent_leg=leg - 1,
                               call_id=f"sink-{i}@test", from_tag="t", account=f"acct{i % 3}@s.test",
                               dialled=f"sip:+49{i:06d}@s.test", setup_ms=t0 + i * 10 + leg,
                               end_ms=t0 + i * 10 + 5000, sip_code=200 if answered else 486,
                               disposition="answered" if answered else "busy",
                               call_sip_code=200 if i % 2 == 0 else 486,
                               call_disposition="answered" if i % 2 == 0 else "busy",
                               duration_ms=4000 if answered else 0))
    return legs


async def test_sink_inserts_from_the_broker_and_duplicates_collapse(broker, kafka_settings, tmp_path):
    topic = unique_topic("cdr.records")
    await ensure_topics(kafka_settings, {topic: 3})
    backend = ChdbBackend(tmp_path / "clickhouse", database=f"sink_{uuid.uuid4().hex[:8]}")
    migrate(backend)
    store = CdrStore(backend)
    tokens = open_store(tmp_path)
    _, admin = tokens.create("admin")
    app = create_app(AppState(cdr_store=store, token_store=tokens))
    legs = synthetic_calls(60, sample_t0())
    try:
        # every leg twice (at-least-once upstream), plus two records nobody can store
        out_of_range = msgspec.structs.replace(legs[0], cdr_id=str(uuid.uuid4()), leg=70_000)
        await produce(kafka_settings, topic, [leg_json(leg) for leg in legs] + [(b"x", b"{not json")]
                      + [leg_json(out_of_range)] + [leg_json(leg) for leg in reversed(legs)])
        sink = CdrSink(store, kafka_settings, topic=topic, group_id=f"sink-{uuid.uuid4().hex[:6]}",
                       batch_rows=50, batch_ms=50, partitions=3)
        task = asyncio.create_task(sink.run())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api", headers=auth(admin)) as client:

            async def all_rows_in():
                return sink.stats.received == 2 * len(legs) + 2 and sink.stats.inserted == 2 * len(legs)
            await aeventually(all_rows_in, "the sink to insert every record", 30)
            items, cursor = [], None
            while True:
                body = (await client.get("/v1/cdrs", params={"limit": 25} | (
                    {"cursor": cursor} if cursor else {}))).json()
                items += body["items"]
                if not (cursor := body["next_cursor"]):
                    break
            assert len(items) == 60 == len({item["cdr_id"] for item in items})
            assert sum(item["legs"] for item in items) == len(legs)
            detail = (await client.get(f"/v1/cdrs/{legs[0].cdr_id}")).json()
            assert [leg["leg"] for leg in detail["legs_detail"]] == [0, 1]
            stats = (await client.get("/v1/stats", params={"period": "month"})).json()["rows"]
            assert (stats[0]["attempts"], stats[0]["answered"]) == (60, 30)
        assert sink.stats.rejected == 2
        sink.stop()
        await asyncio.wait_for(task, 30)
        # offsets were committed after the inserts, up to the end of every partition
        assert sum((await committed_offsets(kafka_settings, topic, sink.group_id, 3)).values()) == \
            2 * len(legs) + 2
        # a replay from offset 0 (a new group) changes nothing
        replay = CdrSink(store, kafka_settings, topic=topic, group_id=f"replay-{uuid.uuid4().hex[:6]}",
                         batch_rows=1000, batch_ms=50, partitions=3)
        task = asyncio.create_task(replay.run())

        async def replayed():
            return replay.stats.received == 2 * len(legs) + 2 and replay.stats.batches >= 1
        await aeventually(replayed, "the replay", 30)
        replay.stop()
        await asyncio.wait_for(task, 30)
        assert len(store.list_calls(CdrFilter(), limit=1000)[0]) == 60
    finally:
        tokens.close()
        backend.close()


async def committed_offsets(settings, topic: str, group: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, read without joining the group (a join on
    Tansu waits out the previous member's session)."""
    consumer = AIOKafkaConsumer(**consumer_kwargs(settings, group_id=group, enable_auto_commit=False))
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


def test_ledger_sink_from_the_broker(broker, tmp_path):
    backend = ChdbBackend(tmp_path / "clickhouse", database=f"ledger_{uuid.uuid4().hex[:8]}")
    migrate(backend)
    data = tmp_path
    kafka = settings_for(broker)
    topic = unique_topic("ledger")
    asyncio.run(ensure_topics(kafka, {topic: 3}))
    queries = LedgerQueries(backend)
    store = LedgerStore(f"sqlite:///{data}/sink.sqlite")
    store.create_schema()
    from billing.ledger.accounts import AccountInfo
    from billing.ledger.events import money_event
    acct = AccountInfo(id="sink@a.test")
    new = store.append([money_event(acct, "topup", D("0.000001"), f"k{i}", ts_ms=1_793_491_200_000 + i)
                        for i in range(25)])
    from proxy.contract.ledger import encode_event
    records = [(e.account.encode(), encode_event(e)) for e in store.unpublished(topic)]
    assert len(records) == 25
    asyncio.run(produce(kafka, topic, records + records[:10]))          # with duplicates

    async def run_sink():
        sink = LedgerSink(queries, kafka, topic=topic, group_id=unique_topic("g"), batch_ms=50, partitions=3)
        task = asyncio.create_task(sink.run())
        await aeventually(lambda: sink.stats.received >= 35, "the ledger sink to read every record", 30)
        sink.stop()
        await task
        return sink.stats
    stats = asyncio.run(run_sink())
    assert stats.received == 35 and stats.rejected == 0
    history = queries.history("sink@a.test", limit=100)
    assert len(history) == 25 and {h["seq"] for h in history} == {e.seq for e in new}
    assert sum((h["amount"] for h in history), D(0)) == D("0.000025")
    store.close()
    backend.close()


# -- the embedded topology process --------------------------------------------------------------

def test_serve_process_runs_sink_and_api(fresh_broker, tmp_path):
    """``python -m api.serve``: one process, sink + API on one chdb path, fed
    from ``proxy.contract.cdr`` on a broker of its own."""
    data = tmp_path / "data"
    config = tmp_path / "sipledger.toml"
    config.write_text('[clickhouse]\nconsumer_group = "serve-test"\nbatch_ms = 50\n')
    env = os.environ | {"PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "api.cli", "--data-dir", str(data), "--config", str(config)]
    token = subprocess.run(cli + ["token", "create", "--role", "admin"], env=env, cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "api.serve", "--data-dir", str(data),
                             "--config", str(config), "--bootstrap", fresh_broker.bootstrap,
                             "--api-port", str(port)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(proc, timeout=60)
        assert line == f"API READY port={port}", (line, proc.stderr.read() if proc.poll() is not None else "")
        legs = synthetic_calls(10, sample_t0())
        asyncio.run(produce(settings_for(fresh_broker), "cdr.records",
                            [leg_json(leg) for leg in legs] * 2))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth(token)) as client:
            def ten_calls():
                body = client.get("/v1/cdrs", params={"limit": 100}).json()
                return body if len(body["items"]) >= 10 else None
            body = eventually(ten_calls, "ten calls through the API", 30)
            assert len(body["items"]) == 10 and sum(item["legs"] for item in body["items"]) == len(legs)
            assert client.get("/v1/cdrs", headers={"Authorization": ""}).status_code == 401
        # a second process on the same chdb path is refused (one process per path)
        second = subprocess.run([sys.executable, "-m", "api.serve", "--data-dir", str(data),
                                 "--config", str(config), "--no-sink", "--api-port", str(free_port())],
                                env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "error: CDR store" in second.stderr, second.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, proc.stderr.read()


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    import selectors
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        return "<no output>"
    return proc.stdout.readline().strip()
