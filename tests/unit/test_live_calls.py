"""The live-call list: rows built from the core's tables (proxy/core/livecalls.py),
the file each worker publishes (proxy/runtime/livecalls.py) and the service that
reads them (api/calls.py), on a fake core -- no sockets, no broker."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from api.calls import BrokerUnknown, CallNotFound, LiveCalls, check_call_id, check_reason
from proxy.contract import commands
from proxy.core.livecalls import FIELDS, live_calls
from proxy.infra import clock
from proxy.infra.config import Config, KafkaSettings
from proxy.runtime.livecalls import LiveCallsFile, calls_path, read_live_calls
from tests.harness.corefake import ALICE, BOB, BYE_FROM_BOB, invite, register, response_to, subscriber_rig

pytestmark = pytest.mark.clock


@pytest.fixture
def rig(tmp_path):
    rig = subscriber_rig(tmp_path, trusted_sources=("192.0.2.20/32",))   # bob registers unchallenged
    register(rig)
    return rig


def _ring(rig, call_id="call-1"):
    """alice (authenticated) calls bob; returns the INVITE the proxy forwarded."""
    out = rig.authenticated(invite(call_id=call_id, branch=f"z9hG4bK{call_id}"), ALICE, "alice", "a-secret")
    return next(m for m, t in out if m.method == "INVITE" and t == BOB)


def test_a_ringing_call_is_early_then_confirmed_then_gone(rig):
    started = clock.now_ms()
    fwd = _ring(rig)
    (row,), total = live_calls(rig.core, 3, 100)
    assert total == 1 and tuple(row) == FIELDS
    assert row == {"call_id": "call-1", "state": "early", "caller": "sip:alice@example.test",
                   "callee": "sip:bob@example.test", "account": "alice@example.test", "gateway": "",
                   "started_ms": row["started_ms"], "answered_ms": 0,
                   "max_duration_s": rig.core.settings.max_dialog_seconds, "worker": 3}
    assert row["started_ms"] >= started
    rig.effects.advance(2)
    rig.receive(response_to(fwd, 200, "OK"), BOB)
    (row,), _ = live_calls(rig.core, 3, 100)
    assert row["state"] == "confirmed" and row["account"] == "alice@example.test"
    assert row["answered_ms"] >= row["started_ms"] and row["callee"] == "sip:bob@example.test"
    rig.receive(BYE_FROM_BOB, BOB)
    assert live_calls(rig.core, 3, 100) == ([], 0)


def test_a_teardown_shows_the_call_ending_until_the_byes_are_answered(rig):
    rig.receive(response_to(_ring(rig), 200, "OK"), BOB)
    rig.engine.on_command(commands.Teardown(id="c1", ts_ms=clock.now_ms(), call_id="call-1", reason="x"))
    (row,), _ = live_calls(rig.core, 0, 100)
    assert row["state"] == "ending"


def test_a_ringing_call_torn_down_is_ending_until_its_final_response(rig):
    fwd = _ring(rig)
    rig.receive(response_to(fwd, 180, "Ringing"), BOB)
    rig.engine.on_command(commands.Teardown(id="c1", ts_ms=clock.now_ms(), call_id="call-1", reason="x"))
    assert [t for m, t in rig.effects.take() if m.method == "CANCEL"] == [BOB]
    (row,), _ = live_calls(rig.core, 0, 100)
    assert row["state"] == "ending"
    rig.receive(response_to(fwd, 487, "Request Terminated"), BOB)
    assert live_calls(rig.core, 0, 100) == ([], 0)


def test_what_callers_wrote_is_bounded(rig):
    long_id = "x" * 5000
    out = rig.authenticated(invite(call_id=long_id, branch="z9hG4bKlong"), ALICE, "alice", "a-secret")
    assert any(m.method == "INVITE" for m, _ in out)
    (row,), _ = live_calls(rig.core, 0, 100)
    assert len(row["call_id"]) == 256 and row["call_id"].startswith("xxx")


def test_the_list_is_bounded_but_counts_every_call(rig):
    for i in range(3):
        _ring(rig, f"call-{i}")
    rows, total = live_calls(rig.core, 0, 2)
    assert total == 3 and [r["call_id"] for r in rows] == ["call-0", "call-1"]


def test_the_file_is_written_when_the_list_changes_only(rig, tmp_path):
    published = LiveCallsFile(tmp_path / "run", 1, limit=1)
    assert published.publish_calls(rig.core)                     # the first (empty) list: the worker is up
    assert not published.publish_calls(rig.core)
    _ring(rig, "call-a")
    _ring(rig, "call-b")
    assert published.publish_calls(rig.core)
    state = json.loads(calls_path(tmp_path / "run", 1).read_text())
    assert state["pid"] == os.getpid() and state["worker"] == 1
    assert state["total"] == 2 and state["truncated"] and [c["call_id"] for c in state["calls"]] == ["call-a"]
    rig.effects.advance(1)
    assert not published.publish_calls(rig.core)                 # durations are the reader's: nothing changed
    published.remove()
    assert read_live_calls(tmp_path / "run") == []


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def _publish(run_dir, worker, pid, calls):
    run_dir.mkdir(parents=True, exist_ok=True)
    calls_path(run_dir, worker).write_text(json.dumps(
        {"worker": worker, "pid": pid, "written_ms": 0, "total": len(calls), "truncated": False, "calls": calls}))


def _call(call_id, account, started_ms, answered_ms=0, worker=0):
    return {"call_id": call_id, "state": "confirmed" if answered_ms else "early", "caller": "sip:a@x",
            "callee": "sip:b@x", "account": account, "gateway": "", "started_ms": started_ms,
            "answered_ms": answered_ms, "max_duration_s": 60, "worker": worker}


@pytest.fixture
def service(tmp_path):
    now = clock.now_ms()
    run = tmp_path / "run"
    _publish(run, 0, os.getpid(), [_call("b@h", "bob@x", now - 5000, now - 3000)])
    _publish(run, 1, os.getpid(), [_call("a@h", "alice@x", now - 9000, worker=1)])
    run.joinpath("calls-worker-1.json").write_text(run.joinpath("calls-worker-1.json").read_text()
                                                   .replace("sip:a@x", "sip:[/bold]\\u001b[2J@x"))
    _publish(run, 2, _dead_pid(), [_call("ghost@h", "alice@x", now - 1000, now - 500, worker=2)])
    (run / "calls-worker-3.json").write_text("{half a fi")
    return LiveCalls(tmp_path, Config())


def test_the_service_merges_running_workers_and_ignores_dead_ones(service):
    page = service.list_calls()
    assert page["workers"] == 2 and not page["truncated"]
    assert [c["call_id"] for c in page["items"]] == ["a@h", "b@h"]            # oldest first
    ringing, answered = page["items"]
    assert ringing["duration_ms"] == 0 and 3000 <= answered["duration_ms"] < 60_000
    assert [c["call_id"] for c in service.list_calls("alice@x")["items"]] == ["a@h"]
    assert service.get("b@h")["worker"] == 0
    assert service.get("ghost@h") is None


def test_hangup_refuses_unknown_and_malformed_calls_before_any_broker(service):
    with pytest.raises(CallNotFound):
        asyncio.run(service.hangup("ghost@h"))               # a dead worker's call
    with pytest.raises(ValueError):
        asyncio.run(service.hangup("has space"))
    with pytest.raises(ValueError):
        asyncio.run(service.hangup("b@h", reason='say "hi"'))
    with pytest.raises(BrokerUnknown):                       # no `up` running, no bootstrap configured
        asyncio.run(service.hangup("b@h"))


def test_hanging_up_an_account_sends_nothing_when_it_has_no_call(service):
    assert asyncio.run(service.hangup_account("carol@x", "blocked")) == []
    with pytest.raises(BrokerUnknown):                       # alice has a call: it must be sent
        asyncio.run(service.hangup_account("alice@x", "blocked"))


def test_the_broker_is_the_running_ups_else_the_configured_one(service):
    run = service.run_dir
    (run / "kafka.json").write_text(json.dumps({"bootstrap": "127.0.0.1:1", "pid": _dead_pid()}))
    configured = LiveCalls(service.data_dir, Config(kafka=KafkaSettings(bootstrap_servers="10.0.0.9:9092")))
    assert configured.bootstrap() == "10.0.0.9:9092"
    (run / "kafka.json").write_text(json.dumps({"bootstrap": "127.0.0.1:1", "pid": os.getpid()}))
    assert configured.bootstrap() == "127.0.0.1:1"


@pytest.mark.parametrize("bad", ["", "a b", "x" * 256, "caf\u00e9", "a\r\nVia: x"])
def test_call_ids_are_bounded_and_printable(bad):
    with pytest.raises(ValueError):
        check_call_id(bad)
    assert check_call_id("a84b4c76e66710@pc33.example.com")


def test_reasons_are_bounded_and_fit_a_quoted_header():
    for bad in ("", "x" * 121, 'a"b', "a\\b", "a\nb"):
        with pytest.raises(ValueError):
            check_reason(bad)
    assert check_reason("fraud: account blocked")


def _cli(data_dir, *args):
    from typer.testing import CliRunner

    from api.cli import app
    return CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])


def test_the_cli_lists_and_refuses_what_the_service_refuses(service):
    data = service.data_dir
    listed = _cli(data, "calls")
    assert listed.exit_code == 0 and "a@h" in listed.output and "b@h" in listed.output
    assert "ghost@h" not in listed.output and "2 call(s) on 2 worker(s)" in listed.output
    assert "\x1b" not in listed.output                      # a caller's escape codes never reach the terminal
    as_json = json.loads(_cli(data, "calls", "--json", "--account", "alice@x").output)
    assert [c["call_id"] for c in as_json["items"]] == ["a@h"]
    assert _cli(data, "hangup", "has space").exit_code == 2
    unknown = _cli(data, "hangup", "nobody@h")
    assert unknown.exit_code == 1 and "no live call nobody@h" in unknown.output
    no_broker = _cli(data, "hangup", "b@h")
    assert no_broker.exit_code == 1 and "not sent" in no_broker.output


# --- several instances: the shared table (proxy/runtime/livecalls.py) ---------------------------

def test_only_a_server_provisioning_database_shares_the_live_calls():
    from proxy.infra.config import ProvisioningSettings
    from proxy.runtime.livecalls import shared_live_calls_url
    url = "postgresql+psycopg://u:p@db/sipledger"
    assert shared_live_calls_url(Config()) is None
    assert shared_live_calls_url(Config(provisioning=ProvisioningSettings(url="sqlite:////tmp/p.sqlite"))) is None
    assert shared_live_calls_url(Config(provisioning=ProvisioningSettings(url=url))) == url


def test_the_shared_row_is_written_on_change_and_heartbeat_and_read_while_fresh(tmp_path):
    """The table logic on SQLite (the same statements PostgreSQL runs in
    tests/integration/test_scale_out.py): a change is written, an unchanged list only at
    the heartbeat, a row older than STALE_MS is a dead instance's, stop removes it."""
    from proxy.runtime.livecalls import HEARTBEAT_MS, STALE_MS, SharedLiveCalls, SharedLiveCallsReader
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    shared = SharedLiveCalls(url, "192.0.2.11:5060", "proxy-a", 1)
    reader = SharedLiveCallsReader(url)
    assert reader.read(0) == []                             # nobody wrote yet: empty, not an error

    def read_shared_live_calls(reader, now):
        return reader.read(now)
    rows = [{"call_id": "c1@h", "state": "confirmed"}]
    state = {"worker": 1, "calls": rows}

    def written(now: int) -> bool:
        started = shared.publish(state, (rows, 1), now)
        if started:
            shared._inflight.result(10)
        return started
    now = 1_000_000
    assert written(now)
    (seen,) = read_shared_live_calls(reader, now)
    assert (seen["instance"], seen["node"], seen["calls"]) == ("192.0.2.11:5060", "proxy-a", rows)
    assert not written(now + HEARTBEAT_MS - 1)              # unchanged: nothing until the heartbeat
    assert written(now + HEARTBEAT_MS)                      # (its time only)
    assert read_shared_live_calls(reader, now + HEARTBEAT_MS)[0]["calls"] == rows
    assert read_shared_live_calls(reader, now + HEARTBEAT_MS + STALE_MS + 1) == []   # its instance died
    rows = [*rows, {"call_id": "c2@h", "state": "early"}]     # (each tick builds its rows anew)
    state = {"worker": 1, "calls": rows}
    assert written(now + HEARTBEAT_MS + 1)                  # changed: at once
    assert len(read_shared_live_calls(reader, now + HEARTBEAT_MS + 1)[0]["calls"]) == 2
    shared.remove()
    assert read_shared_live_calls(reader, now + HEARTBEAT_MS + 1) == []
    reader.close()


def test_an_instance_is_named_by_its_address_or_its_host():
    import socket

    from proxy.infra.config import ProxySettings
    from proxy.runtime.livecalls import instance_name
    assert instance_name(Config(proxy=ProxySettings(listen="192.0.2.11", sip_port=5062))) == "192.0.2.11:5062"
    assert instance_name(Config(proxy=ProxySettings(advertised_host="sip1.example.net"))) == "sip1.example.net:5060"
    assert instance_name(Config(proxy=ProxySettings(listen="0.0.0.0"))) == f"{socket.gethostname()}:5060"


def test_the_shared_table_down_is_an_error_not_an_empty_list(tmp_path):
    """A server provisioning database that does not answer: the listing fails (the
    route answers 503, the CLI one line) rather than showing no calls."""
    from api.calls import LiveCallsUnavailable
    from proxy.infra.config import ProvisioningSettings
    from tests.harness.proxy import free_tcp_port
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_tcp_port()}/none"
    service = LiveCalls(tmp_path, Config(provisioning=ProvisioningSettings(url=url)))
    with pytest.raises(LiveCallsUnavailable, match="shared live-call table"):
        service.list_calls()
    with pytest.raises(LiveCallsUnavailable):
        asyncio.run(service.hangup("a@h"))
    listed = _cli_with_config(tmp_path, url, "calls")
    assert listed.exit_code == 1 and "shared live-call table" in listed.output


def _cli_with_config(data_dir, url, *args):
    from typer.testing import CliRunner

    from api.cli import app
    config = data_dir / "shared.toml"
    config.write_text(f'[provisioning]\nurl = "{url}"\n')
    return CliRunner().invoke(app, ["--data-dir", str(data_dir), "--config", str(config), *args])
