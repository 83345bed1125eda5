"""The REST API over a real chdb store: authentication (401/403), account
isolation, parameter validation (422 naming the field), cursor pagination and
statistics; then the CDR sink against the real Tansu broker, in process and as
the embedded-topology process (``python -m api.serve``)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi.testclient import TestClient

from api.app import create_app
from api.broker import free_port
from api.tokens import open_store
from cdr.store.queries import CdrFilter, CdrStore
from cdr.store.sink import CdrSink
from proxy.contract.cdr import CdrLeg, cdr_id_for
from proxy.infra.clickhouse.backend import ChdbBackend
from proxy.infra.clickhouse.migrate import migrate
from proxy.infra.kafka import consumer_kwargs, ensure_topics
from tests.harness.broker import produce, settings_for, unique_topic
from tests.harness.clickhouse import sample_calls, sample_t0
from tests.harness.poll import aeventually, eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A chdb store with the sample calls, a token store and four tokens."""
    data = tmp_path_factory.mktemp("api")
    backend = ChdbBackend(data / "clickhouse")
    migrate(backend)
    store = CdrStore(backend)
    calls = sample_calls()
    store.insert_legs([leg for legs in calls.values() for leg in legs])
    tokens = open_store(data)
    made = {
        "admin": tokens.create("admin")[1],
        "alice": tokens.create("account", "alice@a.test")[1],
        "bob": tokens.create("account", "bob@b.test")[1],
    }
    revoked_info, made["revoked"] = tokens.create("admin", name="old")
    tokens.revoke(revoked_info.id)
    client = TestClient(create_app(store, tokens))
    yield client, made, calls, data
    client.close()
    tokens.close()
    backend.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get(env, path, who="admin", **params):
    client, tokens, _, _ = env
    return client.get(path, params=params, headers=auth(tokens[who]) if who else {})


def cdr_ids(env, names):
    return {env[2][name][0].cdr_id for name in names}


def loc_fields(response) -> set[str]:
    assert response.status_code == 422, response.text
    return {str(error["loc"][-1]) if not isinstance(error["loc"][-1], int) else str(error["loc"][-2])
            for error in response.json()["detail"]}


# -- authentication and authorisation -------------------------------------------------------

def test_without_or_with_a_bad_token_is_401(env):
    client, tokens, _, _ = env
    for headers in ({}, auth("slt_not-a-real-token"), auth(tokens["revoked"]), auth("garbage"),
                    {"Authorization": f"Basic {tokens['admin']}"}):
        for path in ("/v1/cdrs", f"/v1/cdrs/{uuid.uuid4()}", "/v1/stats"):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert isinstance(response.json()["detail"], str) and response.json()["detail"]
            assert response.headers["www-authenticate"].startswith("Bearer")
    # authentication comes before parameter validation
    assert client.get("/v1/cdrs", params={"limit": "x"}).status_code == 401
    assert client.get("/v1/cdrs", params={"no_such_filter": "1"}).status_code == 401
    assert client.get("/v1/cdrs/not-a-uuid").status_code == 401


def test_account_token_sees_only_its_account(env):
    alice = get(env, "/v1/cdrs", "alice")
    assert alice.status_code == 200
    assert {item["cdr_id"] for item in alice.json()["items"]} == cdr_ids(env, ["c1", "c2", "c7", "c8", "c9"])
    assert {item["account"] for item in alice.json()["items"]} == {"alice@a.test"}
    same = get(env, "/v1/cdrs", "alice", account="alice@a.test")
    assert same.json()["items"] == alice.json()["items"]
    everyone = get(env, "/v1/cdrs", "admin")
    assert len(everyone.json()["items"]) == 9
    bob_call = env[2]["c3"][0].cdr_id
    assert get(env, f"/v1/cdrs/{bob_call}", "bob").status_code == 200
    hidden = get(env, f"/v1/cdrs/{bob_call}", "alice")
    assert hidden.status_code == 404 and hidden.json() == {"detail": "no such CDR"}


def test_account_token_asking_for_another_account_is_403(env):
    for path in ("/v1/cdrs", "/v1/stats"):
        response = get(env, path, "alice", account="bob@b.test")
        assert response.status_code == 403
        assert response.json() == {"detail": "this token may only read account alice@a.test"}


def test_revocation_takes_effect_on_the_next_request(env):
    client, _, _, data = env
    store = open_store(data)        # another process (the CLI) would do the same
    try:
        info, token = store.create("account", "carol@c.test")
        assert {i["account"] for i in client.get("/v1/cdrs", headers=auth(token)).json()["items"]} == \
            {"carol@c.test"}
        store.revoke(info.id)
        assert client.get("/v1/cdrs", headers=auth(token)).status_code == 401
    finally:
        store.close()


# -- parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize("path, params, field", [
    ("/v1/cdrs", {"limit": "0"}, "limit"),
    ("/v1/cdrs", {"limit": "1001"}, "limit"),
    ("/v1/cdrs", {"limit": "ten"}, "limit"),
    ("/v1/cdrs", {"from": "yesterday"}, "from"),
    ("/v1/cdrs", {"to": "2026-13-01T00:00:00Z"}, "to"),
    ("/v1/cdrs", {"from": "2026-11-28T00:00:00Z", "to": "2026-11-27T00:00:00Z"}, "to"),
    ("/v1/cdrs", {"from": "99999999999999999"}, "from"),
    ("/v1/cdrs", {"disposition": "hung"}, "disposition"),
    ("/v1/cdrs", {"caller_ip": "300.1.2.3"}, "caller_ip"),
    ("/v1/cdrs", {"callee": "49' OR 1=1"}, "callee"),
    ("/v1/cdrs", {"min_duration": "-1"}, "min_duration"),
    ("/v1/cdrs", {"cursor": "not-a-cursor"}, "cursor"),
    ("/v1/cdrs", {"acount": "alice@a.test"}, "acount"),
    ("/v1/cdrs/not-a-uuid", {}, "cdr_id"),
    ("/v1/stats", {"period": "week"}, "period"),
    ("/v1/stats", {"group_by": "caller"}, "group_by"),
    ("/v1/stats", {"prefix_len": "0"}, "prefix_len"),
    ("/v1/stats", {"disposition": "answered"}, "disposition"),
])
def test_bad_parameters_are_422_naming_the_field(env, path, params, field):
    response = get(env, path, **params)
    assert field in loc_fields(response), response.json()


def test_filters_through_the_api(env):
    t0 = sample_t0()

    def names(**params):
        response = get(env, "/v1/cdrs", **params)
        assert response.status_code == 200, response.text
        return {item["cdr_id"] for item in response.json()["items"]}

    assert names(callee="+4989", disposition=["failed", "rejected_credit"]) == cdr_ids(env, ["c7", "c8", "c9"])
    assert names(**{"from": "2026-11-27T11:00:00Z", "to": str(t0 + 86_400_000)}) == cdr_ids(env, ["c5", "c6"])
    assert names(**{"from": "2026-11-27T12:00:00+02:00", "to": "2026-11-27T10:03:00"}) == \
        cdr_ids(env, ["c1", "c2", "c3"])
    assert names(gateway="gw-fr", min_duration="30") == cdr_ids(env, ["c4"])
    assert names(caller="+33", caller_ip="198.51.100.7") == cdr_ids(env, ["c3", "c4"])
    assert names(account="x' OR 1=1 --") == set()
    detail = get(env, f"/v1/cdrs/{env[2]['c4'][0].cdr_id.upper()}").json()
    assert [leg["gateway"] for leg in detail["legs_detail"]] == ["gw-fr", "gw-de"]
    assert detail["setup_at"] == "2026-11-27T10:03:00.000Z" and detail["disposition"] == "answered"


def test_cursor_walk(env):
    seen, cursor = [], None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = get(env, "/v1/cdrs", **params).json()
        seen += [(item["setup_ms"], item["cdr_id"]) for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 9 == len(set(seen)) and seen == sorted(seen, reverse=True)
    # a cursor carries no authority: alice's walk with it stays alice's
    first = get(env, "/v1/cdrs", "admin", limit="1").json()
    rest = get(env, "/v1/cdrs", "alice", cursor=first["next_cursor"]).json()["items"]
    assert {item["account"] for item in rest} == {"alice@a.test"}


def test_stats_through_the_api(env):
    body = get(env, "/v1/stats", period="day", group_by="gateway", to="2026-11-28T00:00:00Z").json()
    assert body["unit"] == "leg"
    rows = {row["group"]: row for row in body["rows"]}
    assert (rows["gw-de"]["asr"], rows["gw-de"]["ner"], rows["gw-de"]["acd_s"]) == (0.6667, 1.0, 45.0)
    assert rows["gw-fr"]["pdd_ms"] == {"count": 2, "mean": 175.0, "p50": 300, "p95": 300}
    alice = get(env, "/v1/stats", "alice", period="month").json()
    assert alice["unit"] == "call"
    # alice: c1 answered, c2 busy, c7 failed, c8 rejected for credit (c9, a 302, is not an attempt)
    assert [(r["attempts"], r["answered"], r["effective"], r["asr"]) for r in alice["rows"]] == [(4, 1, 2, 0.25)]
    prefix = get(env, "/v1/stats", period="month", group_by="prefix", prefix_len="2").json()
    assert {row["group"]: row["attempts"] for row in prefix["rows"]} == {"49": 6, "33": 2}


def test_openapi_docs(env):
    client = env[0]
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/cdrs", "/v1/cdrs/{cdr_id}", "/v1/stats"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


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


async def test_sink_inserts_from_the_broker_and_duplicates_collapse(broker, kafka_settings, env, tmp_path):
    topic = unique_topic("cdr.records")
    await ensure_topics(kafka_settings, {topic: 3})
    # chdb: one path per process, so a database of its own on the module's path
    backend = ChdbBackend(env[3] / "clickhouse", database=f"sink_{uuid.uuid4().hex[:8]}")
    migrate(backend)
    store = CdrStore(backend)
    tokens = open_store(tmp_path)
    _, admin = tokens.create("admin")
    app = create_app(store, tokens)
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
