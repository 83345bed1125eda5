"""The sip_trace table (migration 4) on chdb and on clickhouse-server 18.16:
records in, a call's ladder out (deduplicated), retention by day partitions."""
from __future__ import annotations

import uuid

import pytest

from cdr.store.trace import TraceStore, problem
from proxy.contract.trace import TraceBatch, TraceRecord
from proxy.infra.clickhouse.backend import ChdbBackend
from proxy.infra.clickhouse.migrate import migrate

DAY_MS = 86_400_000
NOW_MS = 1_765_000_000_000          # 2025-12-06 05:46:40 UTC; a fixed time, not today's


@pytest.fixture(params=["chdb", "server"])
def store(request, tmp_path):
    if request.param == "chdb":
        backend = ChdbBackend(tmp_path / "chdb")
    else:
        database = f"t_{uuid.uuid4().hex[:12]}"
        backend = request.getfixturevalue("clickhouse_server").backend(database)
    try:
        migrate(backend)
        yield TraceStore(backend)
    finally:
        if request.param == "server":
            backend.execute(f"DROP DATABASE IF EXISTS {database}")
        backend.close()


def rec(i: int, ts_ms: int, call_id: str = "c1@x", **kw) -> TraceRecord:
    fields = dict(id=f"n-0-1-{i}", ts_ms=ts_ms, direction="in", transport="udp", src_ip="192.0.2.1",
                  src_port=5062, dst_ip="127.0.0.1", dst_port=5060, call_id=call_id, cseq="1 INVITE",
                  method="INVITE", node="n", raw="INVITE sip:bob@example.test SIP/2.0\r\nCall-ID: c1@x\r\n\r\n")
    fields.update(kw)
    return TraceRecord(**fields)   # type: ignore[arg-type]


def test_round_trip_dedup_and_retention(store):
    rows = [rec(1, NOW_MS), rec(2, NOW_MS + 5, direction="out", method="", status=200, raw="SIP/2.0 200 OK\r\n\r\n"),
            rec(3, NOW_MS - 9 * DAY_MS, call_id="old@x"), rec(4, NOW_MS + 1, call_id="other@x")]
    assert store.insert(rows) == 4
    bad = rec(9, NOW_MS, src_port=70000)                            # skipped, not the whole batch
    assert store.insert_batches([TraceBatch(records=[*rows[:2], bad])]) == 3   # read twice from Kafka
    got = store.call("c1@x")
    assert got == rows[:2]                                          # one copy each, every field, in time order
    assert store.has(["c1@x", "old@x", "nobody@x"]) == {"c1@x", "old@x"}
    dropped = store.drop_older_than(7, now_ms=NOW_MS)
    assert dropped == ["20251127"]
    assert store.call("old@x") == [] and len(store.call("c1@x")) == 2
    assert store.drop_older_than(7, now_ms=NOW_MS) == []


def test_records_outside_the_columns_are_rejected():
    assert problem(rec(1, NOW_MS)) is None
    assert problem(rec(1, NOW_MS, src_port=70000)) is not None
    assert problem(rec(1, NOW_MS, call_id="")) is not None


def test_cli_prints_the_ladder_and_writes_a_pcap(tmp_path, clickhouse_server):
    from typer.testing import CliRunner

    from api.cli import app
    from proxy.trace import pcap
    from tests.harness.clickhouse import PASSWORD, USER
    database = f"t_{uuid.uuid4().hex[:12]}"
    backend = clickhouse_server.backend(database)
    try:
        migrate(backend)
        rows = [rec(1, NOW_MS), rec(2, NOW_MS + 7, direction="out", method="", status=180, src_ip="127.0.0.1",
                                    src_port=5060, dst_ip="192.0.2.1", dst_port=5062, raw="SIP/2.0 180 Ringing\r\n\r\n")]
        TraceStore(backend).insert(rows)
        config = tmp_path / "sipledger.toml"
        config.write_text(f'[clickhouse]\nbackend = "server"\nport = {clickhouse_server.port}\n'
                          f'database = "{database}"\nuser = "{USER}"\npassword = "{PASSWORD}"\n')
        out = tmp_path / "call.pcap"
        result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "--config", str(config),
                                          "trace", "c1@x", "--pcap", str(out)])
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["192.0.2.1:5062", "127.0.0.1:5060"]
        assert "INVITE" in lines[1] and lines[1].rstrip().endswith(">|")
        assert "180 INVITE" in lines[2] and "<" in lines[2]
        assert [frame[28:] for _ts, frame in pcap.read(out.read_bytes())] == [r.raw.encode() for r in rows]
        missing = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "--config", str(config),
                                           "trace", "nobody@x"])
        assert missing.exit_code == 1 and "no trace" in missing.output
    finally:
        backend.execute(f"DROP DATABASE IF EXISTS {database}")
        backend.close()
