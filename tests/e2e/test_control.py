"""call.control commands and broker outages, end to end with SIPp phones.

Runs the proxy with two workers (SO_REUSEPORT + a private port each), so a
command must reach the worker that owns the dialog, and checks that events
produced while the broker is down all arrive, once, when it is back.
"""
from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from api.broker import EmbeddedBroker
from proxy.contract import commands
from proxy.contract.events import new_event_id
from proxy.infra.clock import now_ms
from proxy.infra.config import KafkaSettings
from proxy.infra.kafka import ensure_topics_sync
from tests.harness.calls import (
    DOMAIN,
    PASSWORDS,
    assert_completed,
    assert_uas_completed,
    registered,
    send_command,
    start_sipledger,
)
from tests.harness.proxy import event_types, read_events
from tests.harness.sipp import SippResult, run_uac

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    # the CDR repair quick (the broker kill test below)
    sl = start_sipledger(tmp_path_factory.mktemp("sipledger-w2") / "data", workers=2,
                         extra_config="\n[archive]\nrepair_seconds = 2\nrepair_grace_seconds = 10\n")
    yield sl
    sl.stop()


def _call_in_background(sl, sipp_dir: Path) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        box["res"] = run_uac("uac_wait_bye", sl.sip_addr,
                             {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 20,
                             auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}",
                             workdir=sipp_dir)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _answered_call_id(sl, uas, timeout=10.0) -> str:
    """Call-ID of the call the UAS answered, once the proxy reported the answer."""
    (invite,) = uas.wait_for("INVITE", timeout)
    call_id = invite.header("Call-ID")
    read_events(sl.kafka_bootstrap, "sip.events", call_id=call_id, timeout=timeout,
                until=lambda evs: "call.answered" in event_types(evs))
    return call_id


def _both_got_proxy_bye(res: SippResult, uas_res: SippResult, reason_text: str) -> None:
    (to_caller,) = res.received("BYE")
    (to_callee,) = uas_res.received("BYE")
    for bye in (to_caller, to_callee):
        assert reason_text in (bye.header("Reason") or ""), bye
    assert res.sent("BYE") == [] and uas_res.sent("BYE") == []


def test_teardown_command_sends_bye_both_ways(two_workers, uas_factory, sipp_dir):
    sl = two_workers
    uas = uas_factory("uas_bye_from_proxy", timeout=30)
    with registered(sl, "bob", uas, sipp_dir):
        thread, box = _call_in_background(sl, sipp_dir)
        call_id = _answered_call_id(sl, uas)
        command = commands.Teardown(id=new_event_id(), ts_ms=now_ms(), call_id=call_id,
                                    reason="credit exhausted", issued_by="test")
        send_command(sl.kafka_bootstrap, command)
        thread.join(25)
        assert_completed(box["res"], "alice is hung up by the proxy")
        uas_res = assert_uas_completed(uas, "bob is hung up by the proxy")
    _both_got_proxy_bye(box["res"], uas_res, 'text="credit exhausted"')
    events = read_events(sl.kafka_bootstrap, "sip.events", call_id=call_id, timeout=10,
                         until=lambda evs: "dialog.teardown" in event_types(evs))
    (teardown,) = [e for e in events if e["type"] == "dialog.teardown"]
    assert teardown["command_id"] == command.id and teardown["result"] == "sent"
    assert teardown["reason"] == "credit exhausted" and teardown["to_tag"]
    assert event_types(events).count("dialog.teardown") == 1   # only the owning worker answers


def test_set_max_duration_command_ends_the_call(two_workers, uas_factory, sipp_dir):
    sl = two_workers
    uas = uas_factory("uas_bye_from_proxy", timeout=30)
    with registered(sl, "bob", uas, sipp_dir):
        thread, box = _call_in_background(sl, sipp_dir)
        call_id = _answered_call_id(sl, uas)
        command = commands.SetMaxDuration(id=new_event_id(), ts_ms=now_ms(), call_id=call_id,
                                          seconds=1, issued_by="test")
        send_command(sl.kafka_bootstrap, command)
        thread.join(25)
        assert_completed(box["res"], "alice is hung up at the new maximum duration")
        uas_res = assert_uas_completed(uas, "bob is hung up at the new maximum duration")
    _both_got_proxy_bye(box["res"], uas_res, "Maximum call duration")
    events = read_events(sl.kafka_bootstrap, "sip.events", call_id=call_id, timeout=10,
                         until=lambda evs: "dialog.timeout" in event_types(evs))
    (applied,) = [e for e in events if e["type"] == "dialog.max_duration"]
    assert applied["result"] == "applied" and applied["max_duration_s"] == 1
    (timeout,) = [e for e in events if e["type"] == "dialog.timeout"]
    assert timeout["max_duration_s"] == 1


def test_unknown_call_teardown_is_reported_or_ignored(two_workers):
    """A command for a call nobody has changes nothing and crashes nothing."""
    sl = two_workers
    command = commands.Teardown(id=new_event_id(), ts_ms=now_ms(), call_id="no-such-call",
                                reason="x")
    send_command(sl.kafka_bootstrap, command)
    assert sl.running


@pytest.fixture
def external_broker(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    _create_topics(broker.bootstrap)
    yield broker
    broker.stop()


def _create_topics(bootstrap: str) -> None:
    ensure_topics_sync(KafkaSettings(bootstrap_servers=bootstrap),
                       {"sip.events": 6, "call.control": 6})


def test_broker_down_during_calls_no_event_lost_or_duplicated(external_broker, tmp_path,
                                                              uas_factory, sipp_dir):
    config = f'\n[kafka]\nmode = "external"\nbootstrap_servers = "{external_broker.bootstrap}"\n'
    sl = start_sipledger(tmp_path / "data", extra_config=config)
    try:
        uas = uas_factory("uas_answer", timeout=60, calls=3)
        with registered(sl, "bob", uas, sipp_dir):
            external_broker.stop()
            results = [run_uac("uac_call", sl.sip_addr,
                               {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 20,
                               auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}",
                               workdir=sipp_dir, hold_ms=100)
                       for _ in range(3)]
            for res in results:
                assert_completed(res, "a call while the broker is down")
            external_broker.start()        # same port, memory storage: topics are gone
            _create_topics(external_broker.bootstrap)
        call_ids = {res.sent("INVITE")[0].header("Call-ID") for res in results}
        assert len(call_ids) == 3
        for call_id in call_ids:
            events = read_events(external_broker.bootstrap, "sip.events", call_id=call_id,
                                 timeout=20, until=lambda evs: "call.bye" in event_types(evs))
            types = event_types(events)
            assert types == ["invite.received", "invite.routed", "call.progress", "call.answered",
                             "call.ack", "call.bye"], types
            ids = [e["id"] for e in events]
            assert len(ids) == len(set(ids))
    finally:
        sl.stop()


BROKER = b"tansu"           # the embedded broker's executable
ARCHIVER = b"api.serve"     # the API process: it runs the archiver (and the other sinks)


def _child_pid(sl, needle: bytes) -> int | None:
    """The descendant of `up` whose command line holds ``needle``."""
    from tests.harness.proxy import _descendants
    for pid in _descendants(sl.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    return pid
        except OSError:
            continue
    return None


def test_zz_embedded_broker_killed_under_load_loses_no_event(two_workers, uas_factory, sipp_dir):
    """Last in the module: kill -9 of the embedded broker twice and, between
    them, of the archiver (the API process), while 30 calls run through both
    workers (before, during and after the calls' events were consumed and
    archived).  Afterwards every call has its CDR, a dry-run
    rebuild from the archive finds every CDR unchanged, and the archive holds
    each call's events once each (docs/operations.md: the outbox keeps an event
    until the archive has it and sends it again to a new broker)."""
    import os
    import signal

    from cdr.archive.store import ArchiveStore
    from proxy.contract.cdr import cdr_id_for
    from proxy.infra.clickhouse.backend import ChdbBackend
    from tests.harness.poll import eventually

    sl, calls = two_workers, 30
    sl.admin_client()
    uas = uas_factory("uas_answer", timeout=90, calls=calls)
    box: dict = {}
    with registered(sl, "bob", uas, sipp_dir):
        thread = threading.Thread(target=lambda: box.update(res=run_uac(
            "uac_call", sl.sip_addr, {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 80,
            auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}", workdir=sipp_dir,
            hold_ms=300, calls=calls, extra_args=["-r", "8"])), daemon=True)
        thread.start()
        kills = 0
        for pause, victim in ((0.5, BROKER), (1.5, ARCHIVER), (2.5, BROKER)):
            thread.join(pause)
            pid = _child_pid(sl, victim)
            assert pid is not None, victim
            os.kill(pid, signal.SIGKILL)
            kills += 1
            eventually(lambda: _child_pid(sl, victim) not in (None, pid), f"up restarts {victim.decode()}", 15,
                       interval=0.1)
        thread.join(80)
    res = box["res"]
    assert res.successful == calls, res.describe()
    invites = {m.header("Call-ID"): m.tag("From") for m in res.sent("INVITE")}
    assert len(invites) == calls
    def missing() -> list[str]:
        try:
            return [call_id for call_id, from_tag in invites.items()
                    if sl.client.get(f"/v1/cdrs/{cdr_id_for(call_id, from_tag)}").status_code != 200]
        except httpx.TransportError:        # the API killed above may still be starting again
            return list(invites)

    # the live path, or the CDR repair from the archive (every 2 s here, after 10 s of grace)
    assert eventually(lambda: not missing(), "every call's CDR", 60, interval=1, fail=False), missing()
    report = sl.client.post("/v1/cdrs/rebuild", json={"from": 0, "to": now_ms() + 86_400_000,
                                                      "dry_run": True}).json()
    assert (report["added"], report["changed"], report["removed"]) == (0, 0, 0), report
    sl.stop()
    backend = ChdbBackend(sl.data_dir / "clickhouse")
    try:
        archive = ArchiveStore(backend)
        per_call = dict(archive.call_events(sorted(invites), 0, now_ms() + 86_400_000))
        distinct, rows = archive.count("sip")
    finally:
        backend.close()
    import json
    for call_id in invites:
        types = [json.loads(p)["type"] for p in per_call[call_id]]
        assert sorted(types) == sorted(["invite.received", "invite.routed", "call.progress",
                                        "call.answered", "call.ack", "call.bye"]), (call_id, types)
    repaired = sum(int(line.split("CDR repair: ")[1].split()[0])
                   for line in (sl.data_dir / "logs" / "api.log").read_text().splitlines() if "CDR repair: " in line)
    print(f"\nkills {kills} (broker, archiver, broker): calls {calls}, CDRs {calls} ({repaired} by the repair), "
          f"archived events {distinct} ({rows} rows before merges)")
