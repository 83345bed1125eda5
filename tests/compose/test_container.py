"""`python -m api.container`, what every compose service runs under: the service's READY
line becomes /healthz, its metrics (multiprocess files, docs/metrics.md) are served on
/metrics, a start failure is the service's one line, SIGTERM stops both."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.compose import REPO
from tests.harness.poll import eventually
from tests.harness.procs import terminate

# the service: counts in a metric family, then says READY once the test lets it
SERVICE = textwrap.dedent("""\
    import os, sys, time
    from proxy.infra import metrics
    metrics.families()["dialog_processed"].inc(3)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.02)
    print("FAKE READY port=1", flush=True)
    time.sleep(60)
""")


def _start(tmp_path: Path, *command: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "api.container", "--ready", "FAKE READY", "--metrics-host", "127.0.0.1",
         "--metrics-port", "0", "--run-dir", str(tmp_path / "run"), "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_ready_line_is_the_health_check_and_metrics_are_served(tmp_path):
    go = tmp_path / "go"
    proc = _start(tmp_path, sys.executable, "-c", SERVICE, str(go))
    try:
        first = proc.stdout.readline()
        assert first.startswith("CONTAINER fake metrics="), first + proc.stderr.read()
        port = int(first.split("metrics=")[1])
        assert _get(port, "/healthz")[0] == 503                    # running, not READY yet
        exposition = eventually(lambda: "sipledger_dialog_processed_total 3.0" in _get(port, "/metrics")[1],
                                "the service's counter on /metrics", timeout=30)
        assert exposition
        go.touch()
        eventually(lambda: _get(port, "/healthz") == (200, "ready\n"), "/healthz after READY", timeout=30)
        assert proc.stdout.readline().startswith("FAKE READY")   # passed on for the container's log
        assert _get(port, "/other")[0] == 404
    finally:
        status = terminate(proc, grace=20)
    assert status == 0, proc.stderr.read()


def test_a_service_that_cannot_start_ends_the_container_with_its_reason(tmp_path):
    proc = _start(tmp_path, sys.executable, "-c",
                  "import sys; print('error: kafka.partitions: must be >= 1', file=sys.stderr); sys.exit(2)")
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        terminate(proc)
    assert proc.returncode == 1
    assert stderr.strip().splitlines()[-1] == "error: fake: kafka.partitions: must be >= 1"
