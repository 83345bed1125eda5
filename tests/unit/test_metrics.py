"""Metrics: the core's plain counters, their copy into prometheus-client, the
multiprocess merge /metrics and `sipledger stats` read, and the dashboard."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from proxy.core.stats import CoreStats, code_class, method_label
from proxy.infra import metrics
from proxy.runtime.metrics import CounterCopy, WorkerMetrics
from tests.harness.corefake import ALICE, BOB, BYE_FROM_BOB, invite, register, response_to, subscriber_rig

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "compose" / "grafana" / "sipledger.json"


def test_labels_an_outsider_chooses_are_bounded():
    stats = CoreStats()
    for i in range(1000):
        stats.request_in(f"X{i}")
        stats.reply_in(1000 + i)           # not a status: not counted
    stats.request_in("INVITE")
    assert stats.rcv_requests == {"OTHER": 1000, "INVITE": 1}
    assert sum(stats.rcv_replies) == 0
    assert (method_label(None), code_class(486), code_class(99), code_class(700)) == ("OTHER", "4xx", None, None)
    for i in range(100):
        stats.teardown(f"reason-{i}")
    assert len(stats.teardowns) == 33 and stats.teardowns["other"] == 68


def _fake_worker(rig):
    return SimpleNamespace(guard=SimpleNamespace(pike=None, shedder=None, refused=0),
                           publisher=SimpleNamespace(published=7, failed_attempts=1),
                           outbox=SimpleNamespace(count=lambda: 3), authorization=None)


def _values(group: str | None = None) -> dict[str, float]:
    return dict(metrics.figures(metrics.snapshot(), group))


def test_a_call_counted_by_the_core_and_copied_once(tmp_path):
    rig = subscriber_rig(tmp_path, auth=False)
    worker = _fake_worker(rig)
    exporter = WorkerMetrics(rig.core, worker, is_first=True)
    exporter.tick(0.0)
    before = _values()
    register(rig)
    fwd = rig.receive(invite(), ALICE)[1][0]
    rig.receive(response_to(fwd, 180, "Ringing"), BOB)
    rig.receive(response_to(fwd, 200, "OK"), BOB)
    rig.receive(BYE_FROM_BOB, BOB)
    rig.receive("garbage\r\n\r\n", ALICE)
    s = rig.core.stats
    assert s.rcv_requests == {"REGISTER": 1, "INVITE": 1, "BYE": 1}
    assert s.fwd_requests == {"INVITE": 1, "BYE": 1}
    assert (s.rcv_replies[1], s.rcv_replies[2], s.fwd_replies[1], s.fwd_replies[2]) == (1, 1, 1, 1)
    assert (s.dialogs_processed, s.dialogs_failed, s.bad_msg) == (1, 0, 1)
    worker.guard.refused = 2               # the flood guard answered two sources 503
    exporter.tick(1.0)
    exporter.tick(2.0)                     # a second copy adds nothing
    after = _values()

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)
    assert grew("core:rcv_requests{method=INVITE}") == 1
    assert grew("core:rcv_requests{method=REGISTER}") == 1
    assert grew("core:fwd_requests{method=BYE}") == 1
    assert grew("core:fwd_replies{class=2xx}") == 1
    assert grew("core:bad_msg") == 1
    assert grew("sl:replies{code=503}") == 2            # the flood guard's are stateless replies too
    assert grew("tm:replies{class=2xx}") >= 2           # the REGISTER's 200 and the INVITE's
    assert grew("dialog:processed") == 1
    assert after["events:outbox_depth"] == 3
    assert after["usrloc:registered_contacts"] == 1 and after["usrloc:registered_users"] == 1
    assert after["dialog:active"] == 0                    # the BYE ended it


def test_counter_copy_adds_only_growth():
    seen = []
    family = SimpleNamespace(inc=seen.append, labels=lambda *a: family)
    copy = CounterCopy()
    for value in (0, 5, 5, 9):
        copy.copy(family, "x", (), value)
    assert seen == [5, 4]


WRITER = """
import os, sys
from proxy.infra import metrics
f = metrics.families()
f["core_rcv_requests"].labels("INVITE").inc(int(sys.argv[1]))
f["dialog_active"].set(int(sys.argv[1]))
f["cdr_event_to_cdr_seconds"].observe(0.2)
print(os.getpid())
"""


def test_every_process_merged_and_dead_ones_leave_the_gauges(tmp_path):
    directory = metrics.prepare_dir(tmp_path)
    env = {**os.environ, metrics.ENV_DIR: str(directory), "PYTHONPATH": str(ROOT)}
    pids = [int(subprocess.run([sys.executable, "-c", WRITER, str(n)], env=env, check=True,
                               capture_output=True, text=True, timeout=30).stdout) for n in (2, 3)]
    text = metrics.exposition(directory).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    (invites,) = [s for s in parsed["sipledger_core_rcv_requests"].samples if s.labels.get("method") == "INVITE"]
    assert invites.value == 5
    rows = dict(metrics.figures(metrics.snapshot(directory)))
    assert rows["dialog:active"] == 5
    assert rows["cdr:event_to_cdr_seconds_count"] == 2
    live = sorted(directory.glob("gauge_live*"))
    assert {p.stem.rpartition("_")[2] for p in live} == {str(pid) for pid in pids}
    os.environ[metrics.ENV_DIR] = str(directory)
    try:
        metrics.process_dead(pids[0])        # the other writer is gone too: both forgotten
    finally:
        del os.environ[metrics.ENV_DIR]
    assert not list(directory.glob("gauge_live*"))
    rows = dict(metrics.figures(metrics.snapshot(directory), "dialog"))
    assert rows.get("dialog:active", 0) == 0     # their gauges went; their counters still count
    assert dict(metrics.figures(metrics.snapshot(directory), "core"))["core:rcv_requests{method=INVITE}"] == 5
    assert metrics.prepare_dir(tmp_path) == directory and not any(directory.iterdir())


def test_dashboard_uses_only_families_that_exist():
    board = json.loads(DASHBOARD.read_text())
    names = {metrics.PREFIX + name for name, *_ in metrics.FAMILIES}
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    import re
    for expr in exprs:
        used = set(re.findall(r"sipledger_[a-z0-9_]+", expr))
        assert used, expr
        for name in used:
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert base in names, f"{name} in {expr!r} is no metric family"
