"""The supervisor library (proxy/infra/supervise.py) with tiny Python children:
READY or the child's one-line reason, restarts only after READY, reverse-order
stop, children that die with their parent, the pid lock."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.infra.pidlock import LockHeld, PidLock
from proxy.infra.supervise import Child, StartFailed, Supervisor
from tests.harness.proxy import REPO, _alive

pytestmark = pytest.mark.integration

# A child: on SIGTERM it appends its name to STOPS and exits, on SIGUSR1 it
# "crashes" (status 1); it prints READY unless FAIL names it (then it writes a
# traceback-like stderr and exits 3) or SILENT does (exit 4, nothing said).
CHILD = """
import os, signal, sys, time
name = sys.argv[1]
def stop(*_):
    with open(os.environ["STOPS"], "a") as f:
        f.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGUSR1, lambda *_: sys.exit(1))     # "crash"
runs = os.environ.get("RUNS")
if runs:                                   # count starts
    with open(runs, "a") as f:
        f.write("x")
if os.environ.get("FAIL") == name:
    print("Traceback (most recent call last):", file=sys.stderr)
    print("error: cannot open the thing", file=sys.stderr, flush=True)
    sys.exit(3)
if os.environ.get("SILENT") == name:
    sys.exit(4)
print(f"{name.upper()} READY pid={os.getpid()}", flush=True)
while True:
    time.sleep(1)
"""


def child(name: str, tmp_path: Path, **env: str) -> Child:
    return Child(name, [sys.executable, "-c", CHILD, name], f"{name.upper()} READY",
                 log=tmp_path / f"{name}.log",
                 env=dict(os.environ, STOPS=str(tmp_path / "stops"), **env))


def stops(tmp_path: Path) -> list[str]:
    path = tmp_path / "stops"
    return path.read_text().split() if path.exists() else []


def test_ready_children_are_stopped_in_reverse_order(tmp_path):
    group = Supervisor([child(n, tmp_path) for n in ("a", "b", "c")], grace=30)
    group.start()
    try:
        assert [c.ready_line.split()[0] for c in group.children] == ["A", "B", "C"]
        assert all(c.running for c in group.children)
    finally:
        group.stop()
    assert stops(tmp_path) == ["c", "b", "a"]
    assert "A READY" in (tmp_path / "a.log").read_text()      # output is kept in the child's log


@pytest.mark.parametrize("together", [False, True])
def test_a_child_that_exits_before_ready_fails_the_start_with_its_last_line(tmp_path, together):
    group = Supervisor([child(n, tmp_path, FAIL="b") for n in ("a", "b", "c")], together=together, grace=30)
    with pytest.raises(StartFailed) as failed:
        group.start()
    assert str(failed.value) == "b: cannot open the thing"
    assert not any(c.running for c in group.children)
    assert "a" in stops(tmp_path)                              # started ones are stopped again
    assert "Traceback" in (tmp_path / "b.log").read_text()


def test_a_silent_exit_names_the_status(tmp_path):
    group = Supervisor([child("a", tmp_path, SILENT="a")])
    with pytest.raises(StartFailed, match=r"^a: exited with status 4 before A READY"):
        group.start()


def test_a_child_that_dies_after_ready_is_restarted(tmp_path):
    warnings: list[str] = []
    runs = tmp_path / "runs"
    group = Supervisor([child("a", tmp_path, RUNS=str(runs))], backoff=(0.0,), warn=warnings.append, grace=30)
    group.start()
    first = group.children[0].proc.pid
    os.kill(first, signal.SIGUSR1)         # dies after READY

    def restarted() -> None:
        c = group.children[0]
        if c.proc.pid != first and c.is_ready:
            group.stopping.set()
    try:
        group.watch(tick=restarted, interval=0.02)
    finally:
        group.stop()
    assert runs.read_text() == "xx"
    assert len(warnings) == 1 and warnings[0].startswith("a exited with status 1")


def test_a_child_dies_with_its_parent(tmp_path):
    # parent: spawns a sleeper through the library, prints its pid, then waits
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from proxy.infra.supervise import spawn\n"
         "p = spawn([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
         "print(p.pid, flush=True)\n"
         "time.sleep(600)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        grandchild = int(parent.stdout.readline())
        assert _alive(grandchild)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(grandchild)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_pid_lock_names_its_holder(tmp_path):
    path = tmp_path / "run" / "up.lock"
    first = PidLock(path).acquire()
    try:
        with pytest.raises(LockHeld) as held:
            PidLock(path).acquire()
        assert held.value.pid == os.getpid()
    finally:
        first.release()
    PidLock(path).acquire().release()       # free again once released
