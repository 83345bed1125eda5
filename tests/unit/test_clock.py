"""The project's wall clock (proxy/infra/clock.py): shiftable, inherited, and the
only source of business timestamps.

``./quickstart.sh test`` runs the tests marked ``clock`` a second time with
``SIPLEDGER_CLOCK_SHIFT_S`` a year ahead; these tests check that the shift
works and that no product module reads the wall clock around it."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from proxy.infra import clock

REPO = Path(__file__).resolve().parents[2]
YEAR = 365 * 86400

pytestmark = pytest.mark.clock


def _in_child(code: str, shift: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != clock.SHIFT_ENV}
    if shift is not None:
        env[clock.SHIFT_ENV] = shift
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_the_clock_follows_the_shift_of_its_process():
    """Whatever this run's shift, the clock is the host's wall clock plus it."""
    assert abs(clock.time() - (time.time() + clock.SHIFT_S)) < 1.0
    assert abs(clock.now_ms() / 1000 - clock.time()) < 1.0
    assert clock.utcnow().tzinfo is timezone.utc
    assert abs(clock.utcnow().timestamp() - clock.time()) < 1.0


@pytest.mark.parametrize("shift", [str(YEAR), "-86400", "0.5"])
def test_a_child_process_reads_the_shift_at_import(shift):
    code = "import time; from proxy.infra import clock; print(clock.time() - time.time())"
    result = _in_child(code, shift)
    assert result.returncode == 0, result.stderr
    assert abs(float(result.stdout) - float(shift)) < 1.0


def test_an_unshifted_child_is_on_the_host_clock():
    result = _in_child("import time; from proxy.infra import clock; print(clock.time() - time.time())", None)
    assert abs(float(result.stdout)) < 1.0


def test_a_bad_shift_stops_the_process_with_one_line():
    result = _in_child("from proxy.infra import clock", "next year")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: SIPLEDGER_CLOCK_SHIFT_S='next year': must be a number of seconds"


def test_this_run_is_really_shifted_when_asked():
    """The shifted run of ``./quickstart.sh test`` must not silently run unshifted."""
    wanted = os.environ.get(clock.SHIFT_ENV)
    if wanted:
        assert clock.SHIFT_S == float(wanted)
        assert clock.utcnow().year >= datetime.fromtimestamp(time.time() + float(wanted), timezone.utc).year


# --- nothing reads the wall clock around proxy.infra.clock --------------------------------------

# Reading these for a business timestamp bypasses the shift; time.monotonic()
# and perf_counter() (timers, timeouts) are fine.
FORBIDDEN = {("time", "time"), ("time", "time_ns"), ("datetime", "now"), ("datetime", "utcnow"),
             ("datetime", "today"), ("date", "today")}
CHECKED = ("proxy", "cdr", "billing", "radius", "api")
# (file, function) pairs allowed to read the host clock, and why
ALLOWED = {
    ("proxy/infra/clock.py", "time"): "the clock itself",
    ("proxy/infra/clock.py", "now_ms"): "the clock itself",
    ("proxy/infra/clock.py", "utcnow"): "the clock itself",
    ("proxy/script/context.py", "authenticate"): "digest nonce times: only compared with this node's own nonces",
    ("proxy/events/control.py", "start"): "compared with Kafka record timestamps (host clock)",
    ("proxy/provisioning/live.py", "maybe_reload"): "lockout expiries: host clock, as the nonce times they sit beside",
    ("proxy/provisioning/lockout_cli.py", "lockouts"): "lockout expiries: host clock, as the workers wrote them",
    ("proxy/runtime/metrics.py", "lockouts_held"): "lockout expiries: host clock, as the workers wrote them",
}


def _wall_clock_reads(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                owner = child.func.value
                owner_name = owner.id if isinstance(owner, ast.Name) else \
                    owner.attr if isinstance(owner, ast.Attribute) else None
                if (owner_name, child.func.attr) in FORBIDDEN or \
                        (owner_name in ("_time",) and child.func.attr in ("time", "time_ns")):
                    found.append((function, child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_product_code_reads_the_wall_clock_only_through_proxy_infra_clock():
    offenders = []
    for package in CHECKED:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for function, line in _wall_clock_reads(path):
                if (rel, function) not in ALLOWED:
                    offenders.append(f"{rel}:{line} in {function}()")
    assert not offenders, "use proxy.infra.clock for business timestamps:\n" + "\n".join(offenders)
